//! Rendering an error with its causes as one line for a person:
//! `outer: cause: root cause`.
//!
//! Error types here add only their own context to `Display` and keep the
//! cause as `source()`; some older ones also repeat the cause's text. The
//! renderer walks the chain and leaves out a cause whose text the line
//! already ends with, so both kinds read once.

use std::error::Error;

/// `e` and every cause, joined with `: `.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading the config")]
        Quiet(#[source] std::io::Error),
        #[error("reading the config: {0}")]
        Repeats(#[source] std::io::Error),
    }

    #[test]
    fn causes_appear_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            chain(&Outer::Quiet(io())),
            "reading the config: no such file"
        );
        assert_eq!(
            chain(&Outer::Repeats(io())),
            "reading the config: no such file"
        );
    }
}
