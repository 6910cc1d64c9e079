//! Secrets masked in a run's log as it streams. A log arrives in chunks
//! cut anywhere, so a secret may straddle two: the redactor holds back
//! the last `longest secret - 1` bytes of what it has seen until it knows
//! they do not start one, and so never sends part of a secret. What it
//! holds back is bounded by the longest secret, whatever the log.

/// What a secret is replaced with.
pub const MASK: &[u8] = b"***";

pub struct Redactor {
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Redactor {
    /// Masking `secrets` (empty ones are ignored: they would match
    /// everywhere).
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first: a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets,
            held: Vec::new(),
        }
    }

    /// The next chunk of the log in; what can safely be sent out.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let (out, rest) = self.mask(false);
        self.held = rest;
        out
    }

    /// The log has ended: the rest of it.
    pub fn finish(&mut self) -> Vec<u8> {
        let (out, _) = self.mask(true);
        self.held.clear();
        out
    }

    /// Mask every secret in what is held; send everything but the bytes
    /// that could still begin a secret (all of it at the end).
    fn mask(&self, end: bool) -> (Vec<u8>, Vec<u8>) {
        let buf = &self.held;
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            // Could a secret start here and end in a later chunk? Asked
            // first: a shorter secret it begins with must not win.
            let rest = &buf[i..];
            if !end
                && self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                return (out, rest.to_vec());
            }
            if let Some(s) = self.secrets.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(MASK);
                i += s.len();
                continue;
            }
            out.push(buf[i]);
            i += 1;
        }
        (out, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `log` through a redactor in chunks of `size` bytes.
    fn through(secrets: &[&str], log: &str, size: usize) -> String {
        let mut r = Redactor::new(secrets);
        let mut out = Vec::new();
        for chunk in log.as_bytes().chunks(size) {
            out.extend(r.push(chunk));
        }
        out.extend(r.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_secret_is_masked_however_the_log_is_cut() {
        let log = "login with hunter2 ok; again hunter2\nhunter";
        for size in 1..=log.len() {
            assert_eq!(
                through(&["hunter2"], log, size),
                "login with *** ok; again ***\nhunter",
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn the_longest_of_overlapping_secrets_is_masked_whole() {
        assert_eq!(
            through(&["abc", "abcdef"], "x abcdef y abc", 2),
            "x *** y ***"
        );
        assert_eq!(
            through(&["", "k"], "kite", 1),
            "***ite",
            "empty ones ignored"
        );
        assert_eq!(through(&[], "plain", 1), "plain");
    }

    #[test]
    fn nothing_is_held_back_that_cannot_begin_a_secret() {
        let mut r = Redactor::new(["secret"]);
        assert_eq!(r.push(b"line one\n"), b"line one\n");
        assert_eq!(r.push(b"sec"), b"");
        assert_eq!(r.push(b"ond"), b"second");
    }
}
