-- 1. Fix customer_code auto-generation
CREATE SEQUENCE IF NOT EXISTS customer_code_seq START 1000;

CREATE OR REPLACE FUNCTION generate_customer_code()
RETURNS TRIGGER AS $$
BEGIN
  IF NEW.customer_code IS NULL THEN
    NEW.customer_code := 'CUST-' || LPAD(nextval('customer_code_seq')::TEXT, 6, '0');
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS set_customer_code ON customers;
CREATE TRIGGER set_customer_code
  BEFORE INSERT ON customers
  FOR EACH ROW
  EXECUTE FUNCTION generate_customer_code();

-- 2. Add beautician to clinic_role enum
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_enum
        WHERE enumlabel = 'beautician'
        AND enumtypid = (SELECT oid FROM pg_type WHERE typname = 'clinic_role')
    ) THEN
        ALTER TYPE clinic_role ADD VALUE IF NOT EXISTS 'beautician';
    END IF;
END
$$;

-- 3. Add workflow_id to sales_commissions
ALTER TABLE sales_commissions
ADD COLUMN IF NOT EXISTS workflow_id UUID REFERENCES workflow_states(id);

CREATE INDEX IF NOT EXISTS idx_sales_commissions_workflow_id
ON sales_commissions(workflow_id);
