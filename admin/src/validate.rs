//! Field rules, collected rather than failing at the first, so one 422 lists them all.

use crate::error::FieldError;

/// Longest password accepted (argon2 has no limit; a cap bounds the work per request).
pub(crate) const MAX_PASSWORD: usize = 128;

/// 3–32 of `[A-Za-z0-9_-]`; returned lowercased.
pub(crate) fn username(raw: &str, errors: &mut Vec<FieldError>) -> String {
    let name = raw.trim().to_lowercase();
    if !(3..=32).contains(&name.len()) {
        errors.push(FieldError::new("username", "must be 3 to 32 characters"));
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        errors.push(FieldError::new("username", "may hold only letters, digits, `_` and `-`"));
    }
    name
}

/// `local@domain.tld`, at most 254 bytes, no spaces; returned lowercased.
pub(crate) fn email(raw: &str, errors: &mut Vec<FieldError>) -> String {
    let email = raw.trim().to_lowercase();
    let well_formed = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.split('.').count() >= 2
                && domain.split('.').all(|label| !label.is_empty())
        });
    if !well_formed {
        errors.push(FieldError::new("email", "must be an email address such as name@example.com"));
    }
    email
}

/// 8–128 characters.
pub(crate) fn password(raw: &str, errors: &mut Vec<FieldError>) {
    let n = raw.chars().count();
    if n < 8 || raw.len() > MAX_PASSWORD {
        errors.push(FieldError::new("password", "must be 8 to 128 characters"));
    }
}

/// 1–32 characters, no control characters; returned trimmed.
pub(crate) fn display_name(field: &str, raw: &str, errors: &mut Vec<FieldError>) -> String {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 32 {
        errors.push(FieldError::new(field, "must be 1 to 32 characters"));
    } else if name.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "may not hold control characters"));
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(f: impl FnOnce(&mut Vec<FieldError>)) -> Vec<String> {
        let mut errors = Vec::new();
        f(&mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn usernames() {
        assert!(problems(|e| drop(username("Alice_01", e))).is_empty());
        assert_eq!(username(" Alice ", &mut Vec::new()), "alice");
        for bad in ["ab", "a b c", "ålice", &"x".repeat(33), "semi;colon"] {
            assert_eq!(problems(|e| drop(username(bad, e))), ["username"], "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        assert!(problems(|e| drop(email("A@Example.com", e))).is_empty());
        assert_eq!(email("A@Example.com", &mut Vec::new()), "a@example.com");
        for bad in ["", "a", "a@b", "@b.c", "a@@b.c", "a@b..c", "a b@c.d", &format!("{}@b.co", "x".repeat(260))] {
            assert_eq!(problems(|e| drop(email(bad, e))), ["email"], "{bad:?}");
        }
    }

    #[test]
    fn passwords_and_display_names() {
        assert!(problems(|e| password("12345678", e)).is_empty());
        assert_eq!(problems(|e| password("1234567", e)), ["password"]);
        assert_eq!(problems(|e| password(&"p".repeat(129), e)), ["password"]);
        assert!(problems(|e| drop(display_name("d", "Zoë 🎮", e))).is_empty());
        assert_eq!(problems(|e| drop(display_name("d", "  ", e))), ["d"]);
        assert_eq!(problems(|e| drop(display_name("d", "a\u{7}b", e))), ["d"]);
    }
}
