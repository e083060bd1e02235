//! Timestamps as the state database stores them.

/// Now, as RFC 3339 UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}
