//! An incremental server-sent-events decoder, bounded, per the WHATWG rules.
//!
//! Bytes go in in any chunking; frames come out: events (`data:` lines joined with `\n`,
//! with `event:` and `id:` if present) and comments (lines starting with `:`, which the real
//! server sends as keepalives: `: keepalive` and a bare `:`). Lines end with `\r\n`, `\n` or
//! `\r`; a UTF-8 BOM at the very start is skipped. A line or an event past its limit is a
//! typed error; memory never grows past the limits.

use crate::DecodeError;
use std::collections::VecDeque;

/// Bounds against a hostile server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest SSE line (16 MiB: one event is one line, and ciphertext may be 10 MiB in
    /// base64).
    pub max_line: usize,
    /// Largest event (data of all its lines).
    pub max_event: usize,
    /// Largest HTTP response body.
    pub max_body: usize,
    /// Most messages in one page.
    pub max_page_messages: usize,
    /// Largest ciphertext, decoded (10 MiB, the lexicon's maximum).
    pub max_ciphertext: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 16 << 20,
            max_event: 16 << 20,
            max_body: 64 << 20,
            max_page_messages: 1_000,
            max_ciphertext: 10 << 20,
        }
    }
}

/// One decoded SSE frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An event.
    Event {
        /// `event:` (none on the Catbird server: the kind is the JSON `$type`).
        event: Option<String>,
        /// `data:` lines joined with `\n`.
        data: String,
        /// `id:`, if any.
        id: Option<String>,
    },
    /// A comment line (`:` and what follows, without the colon): a keepalive.
    Comment(String),
    /// A `retry:` field: the server's reconnection time in milliseconds.
    Retry(u64),
}

/// The decoder. Feed bytes with [`push`](Self::push), take frames with
/// [`next_frame`](Self::next_frame).
#[derive(Debug)]
pub struct SseDecoder {
    limits: Limits,
    line: Vec<u8>,
    /// The previous byte was `\r`: a following `\n` belongs to the same line end.
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    frames: VecDeque<Frame>,
    error: Option<DecodeError>,
    failed: bool,
}

impl SseDecoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> SseDecoder {
        SseDecoder {
            limits,
            line: Vec::new(),
            after_cr: false,
            started: false,
            data: String::new(),
            has_data: false,
            event: None,
            id: None,
            frames: VecDeque::new(),
            error: None,
            failed: false,
        }
    }

    /// Feeds bytes. Once a limit is broken the decoder reports it once and ignores the rest
    /// (the adapter closes the stream and reconnects).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line);
                    self.line = line;
                    self.line.clear();
                    if self.failed {
                        return;
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= self.limits.max_line {
                        self.fail(DecodeError::LineTooLong {
                            limit: self.limits.max_line,
                        });
                        return;
                    }
                    self.line.push(b);
                }
            }
        }
    }

    fn fail(&mut self, e: DecodeError) {
        self.error = Some(e);
        self.failed = true;
        self.line = Vec::new();
        self.data = String::new();
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
        };
        if line.is_empty() {
            // Dispatch.
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                self.frames.push_back(Frame::Event {
                    event: self.event.take(),
                    data,
                    id: self.id.clone(),
                });
            }
            self.has_data = false;
            self.data.clear();
            self.event = None;
            return;
        }
        let line = String::from_utf8_lossy(line);
        if let Some(comment) = line.strip_prefix(':') {
            self.frames
                .push_back(Frame::Comment(comment.trim_start().to_string()));
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.limits.max_event {
                    self.fail(DecodeError::EventTooLarge {
                        limit: self.limits.max_event,
                    });
                    return;
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.frames.push_back(Frame::Retry(ms));
                }
            }
            _ => {}
        }
    }

    /// The next complete frame, if any; an error once a limit was broken.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(f) = self.frames.pop_front() {
            return Ok(Some(f));
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Bytes held for an unfinished line and event (bounded by the limits).
    pub fn buffered(&self) -> usize {
        self.line.len() + self.data.len()
    }
}

/// A whole body decoded from its chunks.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The frames, in order.
    pub frames: Vec<Frame>,
    /// Whether a limit stopped the decoding.
    pub failed: bool,
    /// The most bytes the decoder held at any point.
    pub peak_buffered: usize,
}

/// Decodes a body given in chunks (a test, a fuzz target, a recorded stream).
pub fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, limits: Limits) -> Decoded {
    let mut d = SseDecoder::new(limits);
    let mut out = Decoded {
        frames: Vec::new(),
        failed: false,
        peak_buffered: 0,
    };
    for chunk in chunks {
        d.push(chunk);
        out.peak_buffered = out.peak_buffered.max(d.buffered());
        loop {
            match d.next_frame() {
                Ok(Some(f)) => out.frames.push(f),
                Ok(None) => break,
                Err(_) => {
                    out.failed = true;
                    break;
                }
            }
        }
    }
    out
}
