//! ban-disabling-timeouts: see docs/rules/ban-disabling-timeouts.md

use pg_query::NodeEnum;

use super::helpers::hit;
rule!(
    BanDisablingTimeouts, "ban-disabling-timeouts", Error, "Turning off lock_timeout or statement_timeout removes the deploy's safety net.",
    problem: "`SET lock_timeout = 0` (or `statement_timeout = 0`) in a migration.",
    why: "shipsafe sets lock_timeout so a migration waiting for a lock gives up (and retries) instead of queueing every application query behind it. Setting it to 0 brings back the outage: one long transaction and the site stops.",
    safe: "Leave the timeouts to shipsafe (`[migrations] lock_timeout`, `statement_timeout`); raise statement_timeout there for a migration that needs longer.",
    |stmt, ctx| {
        let NodeEnum::VariableSetStmt(v) = stmt else { return None };
        if !matches!(v.name.as_str(), "lock_timeout" | "statement_timeout") {
            return None;
        }
        let zero = v.args.iter().any(|a| match &a.node {
            Some(NodeEnum::AConst(c)) => matches!(&c.val, Some(pg_query::protobuf::a_const::Val::Ival(i)) if i.ival == 0)
                || matches!(&c.val, Some(pg_query::protobuf::a_const::Val::Sval(s)) if s.sval.trim() == "0"),
            _ => false,
        });
        if !zero {
            return None;
        }
        hit(format!("SET {} = 0 disables the timeout shipsafe relies on to keep a blocked migration from stalling the application", v.name),
            "set timeouts in [migrations] of shipsafe.toml instead")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires("ban-disabling-timeouts", "set lock_timeout = 0;"));
        assert!(fires(
            "ban-disabling-timeouts",
            "set statement_timeout to '0';"
        ));
        assert!(!fires("ban-disabling-timeouts", "set lock_timeout = '5s';"));
    }
}
