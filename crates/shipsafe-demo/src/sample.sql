-- A small SME management database (users with roles, employees, tools and
-- per-user tool access), shaped like the apps shipsafe is built for.
-- Deterministic: the same rows on every run.

create extension if not exists pgcrypto;

create table users (
    id              serial primary key,
    username        text not null unique,
    email           text not null unique,
    phone           text,
    role            text not null check (role in ('superadmin', 'admin', 'hr', 'employee')),
    is_active       boolean not null default true,
    hashed_password text not null,
    created_at      timestamptz not null default '2025-08-11 09:00:00+00'
);

create table employees (
    id           serial primary key,
    user_id      integer not null references users (id),
    full_name    text not null,
    department   text not null,
    bank_account text,
    salary       numeric(10, 2) not null,
    hired_on     date not null
);
create index employees_user_id_idx on employees (user_id);

create table tools (
    id          serial primary key,
    name        text not null unique,
    description text not null default '',
    is_active   boolean not null default true
);

create table tool_access (
    user_id    integer not null references users (id),
    tool_id    integer not null references tools (id),
    granted_at timestamptz not null default '2025-08-11 09:00:00+00',
    primary key (user_id, tool_id)
);
create index tool_access_tool_id_idx on tool_access (tool_id);

insert into users (username, email, phone, role, hashed_password) values
    ('admin', 'admin@sme.example', '+49 30 1000000', 'superadmin', crypt('admin123', gen_salt('bf', 4))),
    ('hr_lead', 'hr@sme.example', '+49 30 1000001', 'hr', crypt('a long passphrase nobody guesses', gen_salt('bf', 4))),
    ('user_a', 'user_a@sme.example', '+49 30 1000002', 'employee', crypt('user_a passphrase 7f3', gen_salt('bf', 4)));

insert into users (username, email, phone, role, hashed_password)
select 'employee' || g,
       'employee' || g || '@sme.example',
       '+49 30 2' || lpad(g::text, 6, '0'),
       'employee',
       crypt('employee passphrase ' || md5(g::text), gen_salt('bf', 4))
from generate_series(1, 47) as g;

insert into employees (user_id, full_name, department, bank_account, salary, hired_on)
select u.id,
       initcap(replace(u.username, '_', ' ')) || ' Example',
       (array['Sales', 'HR', 'Finance', 'Operations', 'Support'])[1 + u.id % 5],
       'DE' || lpad((89370400440532013000 + u.id)::text, 20, '0'),
       32000 + (u.id * 731) % 40000,
       date '2020-01-06' + (u.id * 37) % 1800
from users u
where u.role <> 'superadmin';

insert into tools (name, description, is_active) values
    ('Payroll', 'Monthly payroll runs', true),
    ('Leave Requests', 'Request and approve leave', true),
    ('Email Templates management', 'Edit outgoing email templates', true),
    ('Invoice Generator', 'Create customer invoices', true),
    ('Legacy Exporter', 'Old CSV export, to be removed', false);

-- Everybody gets leave requests; HR and admins get payroll; every user
-- except user_a gets the invoice generator (seed 001's grant).
insert into tool_access (user_id, tool_id)
select u.id, t.id from users u cross join tools t
where t.name = 'Leave Requests'
   or (t.name = 'Payroll' and u.role in ('superadmin', 'hr'))
   or (t.name = 'Invoice Generator' and u.username <> 'user_a')
   or (t.name = 'Email Templates management' and u.role in ('superadmin', 'admin'));

drop extension pgcrypto;
