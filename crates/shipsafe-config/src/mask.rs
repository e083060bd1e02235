//! Masking secrets in text: passwords in URLs and `password=` parameters,
//! wherever they appear. Everything a human may read passes through
//! [`mask_secrets`].

/// The text printed instead of a password.
pub const MASK: &str = "***";

/// Masks passwords in every URL (`scheme://user:PASSWORD@host`) and every
/// `password=VALUE` (query parameter or libpq keyword) found in `text`.
pub fn mask_secrets(text: &str) -> String {
    let masked = mask_userinfo(text);
    mask_password_params(&masked)
}

/// Returns the password written in a URL or keyword/value string, if any.
pub fn literal_password(text: &str) -> Option<String> {
    if let Some((_, pw)) = userinfo_password_span(text) {
        return Some(text[pw.0..pw.1].to_string());
    }
    password_param_spans(text)
        .first()
        .map(|&(s, e)| unquote(&text[s..e]))
}

fn unquote(v: &str) -> String {
    v.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(v)
        .to_string()
}

/// The first `scheme://user:password@` in text: (user-info start, password
/// span). The URL runs to the next blank or quote; its user-info ends as the
/// connection parser decides ([`userinfo_end`]), so a
/// password holding `/`, `?`, `#` or `@` is masked whole.
fn userinfo_password_span(text: &str) -> Option<(usize, (usize, usize))> {
    let mut search = 0;
    while let Some(rel) = text[search..].find("://") {
        let body_start = search + rel + 3;
        let token_end = text[body_start..]
            .find([' ', '\n', '\t', '"', '\'', '<', '>'])
            .map_or(text.len(), |i| body_start + i);
        let body = &text[body_start..token_end];
        if let Some(at) = masking_userinfo_end(body).or_else(|| userinfo_end(body))
            && let Some(colon) = body[..at].find(':')
        {
            return Some((body_start, (body_start + colon + 1, body_start + at)));
        }
        search = token_end.max(body_start);
    }
    None
}

/// Masking is wider than parsing: any later `@` ends the user-info when what
/// precedes the first `:` looks like a user name, so a password the parser
/// would reject (unencoded `?` and `=`) is still never printed.
fn masking_userinfo_end(body: &str) -> Option<usize> {
    let at = body.rfind('@')?;
    let colon = body[..at].find(':')?;
    (!body[..colon].contains(['/', '?', '=', '#'])).then_some(at)
}

/// A value made only of `${NAME}` references names variables; it holds no
/// secret and stays readable. (The template grammar's `${NAME}` only: this
/// module sits below `template`, whose own printing is masked here.)
fn is_reference_only(v: &str) -> bool {
    let mut rest = v;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix("${") else {
            return false;
        };
        let Some(end) = inner.find('}') else {
            return false;
        };
        let name = &inner[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return false;
        }
        rest = &inner[end + 1..];
    }
    true
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((_, (s, e))) = userinfo_password_span(rest) {
        out.push_str(&rest[..s]);
        if is_reference_only(&rest[s..e]) {
            out.push_str(&rest[s..e]);
        } else if s < e {
            out.push_str(MASK);
        }
        out.push_str(&rest[e..e + 1]); // the '@'
        rest = &rest[e + 1..];
    }
    out.push_str(rest);
    out
}

/// Spans of the values of `password=` parameters (`?password=`, `&password=`,
/// or a libpq keyword at a word boundary).
fn password_param_spans(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(rel) = lower[from..].find("password") {
        let key_start = from + rel;
        let mut i = key_start + "password".len();
        let boundary_ok = key_start == 0
            || matches!(
                text.as_bytes()[key_start - 1],
                b'?' | b'&' | b' ' | b'\t' | b'\n' | b'"' | b'\''
            );
        let bytes = text.as_bytes();
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if !boundary_ok || i >= bytes.len() || bytes[i] != b'=' {
            from = key_start + 1;
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let start = i;
        let end = if i < bytes.len() && bytes[i] == b'\'' {
            // libpq quoted value: runs to the next unescaped quote.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            let mut j = i;
            while j < bytes.len() && !matches!(bytes[j], b'&' | b' ' | b'\n' | b'#' | b'"' | b'\'')
            {
                j += 1;
            }
            j
        };
        if end > start {
            spans.push((start, end));
        }
        from = end.max(key_start + 1);
    }
    spans
}

fn mask_password_params(text: &str) -> String {
    let spans: Vec<_> = password_param_spans(text)
        .into_iter()
        .filter(|&(s, e)| !is_reference_only(&text[s..e]))
        .collect();
    if spans.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (s, e) in spans {
        out.push_str(&text[last..s]);
        out.push_str(MASK);
        last = e;
    }
    out.push_str(&text[last..]);
    out
}

/// Where the user-info of a URL body (after `scheme://`) ends: the index of
/// its `@`. libpq stops at the first `/`; a password holding `/`, `?` or `#`
/// unencoded is still recognised when an `@` follows with no `=` before it
/// (so `?user=me@corp` stays a parameter).
pub(crate) fn userinfo_end(body: &str) -> Option<usize> {
    let authority_end = body.find(['/', '?', '#']).unwrap_or(body.len());
    if let Some(at) = body[..authority_end].rfind('@') {
        return Some(at);
    }
    let at = body.rfind('@')?;
    (!body[..at].contains('=')).then_some(at)
}
