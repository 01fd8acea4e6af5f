//! Debian version ordering (Debian Policy 5.6.12), used to pick the newest
//! kernel among package names and cache entries. Only comparison; no
//! validation beyond what ordering needs.

use std::cmp::Ordering;

/// Compares two Debian versions `[epoch:]upstream[-revision]` the way
/// `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// Splits into (epoch, upstream, revision). A missing epoch is 0, a missing
/// revision is empty; a non-numeric "epoch" is kept as part of upstream.
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => match e.parse::<u64>() {
            Ok(n) => (n, rest),
            Err(_) => (0, v),
        },
        None => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) => (epoch, up, rev),
        None => (epoch, rest, ""),
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (compared char by char with
/// `~` before everything, even the end, and letters before other symbols)
/// and digit runs (compared numerically).
fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        let (na, ra) = split_run(a, |c| !c.is_ascii_digit());
        let (nb, rb) = split_run(b, |c| !c.is_ascii_digit());
        let ord = compare_non_digits(na, nb);
        if ord != Ordering::Equal {
            return ord;
        }
        let (da, ra) = split_run(ra, |c| c.is_ascii_digit());
        let (db, rb) = split_run(rb, |c| c.is_ascii_digit());
        let ord = compare_digits(da, db);
        if ord != Ordering::Equal {
            return ord;
        }
        a = ra;
        b = rb;
    }
    Ordering::Equal
}

fn split_run(s: &[u8], pred: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|&&c| pred(c)).count();
    s.split_at(n)
}

/// Weight of one character of a non-digit run; `None` is the end of the run.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_non_digits(a: &[u8], b: &[u8]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len)
        .map(|i| weight(a.get(i).copied()).cmp(&weight(b.get(i).copied())))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

fn compare_digits(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> Vec<u8> { s.iter().copied().skip_while(|&c| c == b'0').collect() };
    let (a, b) = (strip(a), strip(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn numeric_runs_compare_as_numbers() {
        assert_eq!(compare("7.10.1", "7.9.12"), Greater);
        assert_eq!(compare("7.3.4+deb13", "7.2.12+deb13"), Greater);
        assert_eq!(compare("7.03", "7.3"), Equal);
    }

    #[test]
    fn tilde_sorts_before_everything() {
        assert_eq!(compare("7.3.4-1~bpo13+1", "7.3.4-1"), Less);
        assert_eq!(compare("1.0~rc1", "1.0"), Less);
        assert_eq!(compare("1.0~~", "1.0~"), Less);
    }

    #[test]
    fn letters_before_symbols_and_end_before_letters() {
        assert_eq!(compare("1.0a", "1.0+"), Less);
        assert_eq!(compare("1.0", "1.0a"), Less);
        assert_eq!(compare("1.0+deb13", "1.0"), Greater);
    }

    #[test]
    fn epoch_and_revision() {
        assert_eq!(compare("1:1.0", "2.0"), Greater);
        assert_eq!(compare("1.0-2", "1.0-10"), Less);
        assert_eq!(compare("1.0-1-2", "1.0-1-1"), Greater);
    }

    #[test]
    fn agrees_with_dpkg_when_present() {
        let pairs = [
            ("7.3.4+deb13-cloud-amd64", "7.2.12+deb13-cloud-amd64"),
            ("6.19.10+deb13", "6.19.9+deb13"),
            ("7.3.4-1~bpo13+1", "7.3.4-1~bpo13+2"),
            ("1.0~rc1", "1.0"),
            ("2:1", "1:9"),
            ("1.0a", "1.0+"),
        ];
        let Ok(probe) = std::process::Command::new("dpkg").arg("--version").output() else {
            return;
        };
        if !probe.status.success() {
            return;
        }
        for (a, b) in pairs {
            let dpkg_lt = std::process::Command::new("dpkg")
                .args(["--compare-versions", a, "lt", b])
                .status()
                .unwrap()
                .success();
            assert_eq!(compare(a, b) == Less, dpkg_lt, "{a} vs {b}");
        }
    }
}
