//! Durations as a person types them on the command line: `5s`, `500ms`,
//! `2m`, or a plain number of seconds.

use std::time::Duration;

use thiserror::Error;

/// A duration argument that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DurationError {
    #[error("bad duration {0:?}: expected e.g. 5s, 500ms, 2m")]
    NotANumber(String),
    #[error("bad duration unit in {0:?}: use ms, s or m")]
    Unit(String),
    #[error("duration {0:?} must be positive")]
    NotPositive(String),
}

/// Parses `5s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_string()))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(DurationError::Unit(s.to_string())),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(DurationError::NotPositive(s.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(matches!(
            parse_duration("0s"),
            Err(DurationError::NotPositive(_))
        ));
        assert!(matches!(parse_duration("5h"), Err(DurationError::Unit(_))));
        assert!(matches!(
            parse_duration("abc"),
            Err(DurationError::NotANumber(_))
        ));
    }
}
