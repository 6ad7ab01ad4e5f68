//! Incremental NDJSON line splitting with a bounded line length (Ollama's own
//! client allows 8 MB per line).

pub(crate) const MAX_LINE: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTooLong(pub usize);

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineDecoder {
    pub fn new(max: usize) -> Self {
        LineDecoder {
            buf: Vec::new(),
            max,
        }
    }

    /// Feed bytes; returns every complete, non-blank line (without the newline).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            if self.buf.len() > self.max {
                return Err(LineTooLong(self.buf.len()));
            }
            let line = std::mem::take(&mut self.buf);
            if !is_blank(&line) {
                out.push(trim_cr(line));
            }
        }
        self.buf.extend_from_slice(rest);
        if self.buf.len() > self.max {
            return Err(LineTooLong(self.buf.len()));
        }
        Ok(out)
    }

    /// The last line when the stream ended without a newline.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.buf);
        (!is_blank(&line)).then(|| trim_cr(line))
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

fn trim_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_pushes() {
        let mut d = LineDecoder::default();
        assert!(d.push(b"{\"a\":").unwrap().is_empty());
        let lines = d.push(b"1}\n\n{\"b\":2}\r\n{\"c\"").unwrap();
        assert_eq!(lines, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert_eq!(d.finish(), Some(b"{\"c\"".to_vec()));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn bounded() {
        let mut d = LineDecoder::new(8);
        assert!(d.push(b"0123456789").is_err());
        let mut d = LineDecoder::new(8);
        assert!(d.push(b"01234\n567").is_ok());
    }
}
