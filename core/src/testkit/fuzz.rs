//! The fuzz targets' input (feature `fuzzing`): a machine configuration and a sequence of
//! [`Op`]s — the same enum the proptests generate. The bytes of an input can also be written
//! (`to_bytes`), so that the named scenarios seed the fuzzer's corpus.

use super::{Op, OpRunner};
use crate::Config;

/// A configuration made of small numbers, so that any bytes make a valid one.
#[derive(Clone, Debug, Default, PartialEq, Eq, arbitrary::Arbitrary)]
pub struct FuzzConfig {
    /// `max_buffered` - 1.
    pub max_buffered: u8,
    /// `max_buffered_total` / `max_buffered` - 1 (mod 4).
    pub total_factor: u8,
    /// `page_limit` - 1 (mod 100).
    pub page_limit: u8,
    /// `max_inflight_fetches` - 1 (mod 8).
    pub inflight: u8,
}

impl FuzzConfig {
    /// The machine's configuration.
    pub fn to_config(&self) -> Config {
        let max_buffered = usize::from(self.max_buffered) + 1;
        Config {
            max_buffered,
            max_buffered_total: max_buffered * (usize::from(self.total_factor % 4) + 1),
            page_limit: u16::from(self.page_limit % 100) + 1,
            max_inflight_fetches: usize::from(self.inflight % 8) + 1,
            ..Config::default()
        }
    }
}

/// One fuzz input.
#[derive(Clone, Debug, Default, PartialEq, Eq, arbitrary::Arbitrary)]
pub struct FuzzInput {
    /// The configuration.
    pub config: FuzzConfig,
    /// What happens.
    pub ops: Vec<Op>,
}

impl FuzzInput {
    /// Runs the ops, checking every invariant after every step (a violation panics).
    pub fn run(&self) {
        OpRunner::run(self.config.to_config(), &self.ops);
    }

    /// Bytes that `arbitrary` (1.x) decodes back into this input.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        let c = &self.config;
        w.bytes(&[c.max_buffered, c.total_factor, c.page_limit, c.inflight]);
        for op in &self.ops {
            w.bool(true);
            w.op(op);
        }
        w.bool(false);
        w.0
    }

    /// The named scenarios of the snapshot tests, as inputs: the fuzzer's seeds.
    pub fn scenarios() -> Vec<(&'static str, FuzzInput)> {
        use Op::*;
        let open = |convo| {
            vec![
                Subscribe { convo, live: true },
                StreamOpened {
                    convo,
                    stale: false,
                },
                Page {
                    pick: 0,
                    messages: vec![],
                    fill: false,
                },
            ]
        };
        let msg = |seq: u16| StreamMessage {
            convo: 0,
            seq,
            id: seq as u8,
            epoch: 1,
        };
        let input = |ops: Vec<Op>| FuzzInput {
            config: FuzzConfig {
                max_buffered: 31,
                total_factor: 1,
                page_limit: 49,
                inflight: 7,
            },
            ops,
        };
        let mut seed = open(0);
        seed.extend([msg(1), msg(2), msg(5), msg(6), Advance { ms: 500 }]);
        // Fetch since 1: offsets 1..3 are seqs 2..4.
        seed.push(Page {
            pick: 0,
            messages: vec![(1, 2, 1), (2, 3, 1), (3, 4, 1)],
            fill: false,
        });
        let mut filled = open(0);
        filled.extend([
            msg(1),
            msg(3),
            Advance { ms: 200 },
            msg(2),
            Advance { ms: 2000 },
        ]);
        let mut reconnect = open(0);
        reconnect.extend([
            msg(1),
            StreamClosed { convo: 0, error: 1 },
            Advance { ms: 1000 },
            StreamOpened {
                convo: 0,
                stale: false,
            },
        ]);
        reconnect.push(Page {
            pick: 0,
            messages: vec![(1, 1, 1), (2, 2, 1), (3, 3, 1)],
            fill: false,
        });
        let mut hole = open(0);
        hole.extend([msg(1), msg(4), Advance { ms: 500 }]);
        hole.push(Page {
            pick: 0,
            messages: vec![(1, 1, 1), (2, 2, 1)],
            fill: false,
        });
        hole.push(Advance { ms: 2000 });
        hole.push(Page {
            pick: 0,
            messages: vec![(1, 2, 1)],
            fill: false,
        });
        let mut overflow = open(0);
        overflow.extend([msg(1), msg(3), msg(4), msg(5), msg(6), Advance { ms: 500 }]);
        overflow.push(Page {
            pick: 0,
            messages: (1..=6).map(|s| (s, s, 1)).collect(),
            fill: false,
        });
        let mut clear = open(0);
        clear.extend([
            msg(1),
            msg(3),
            Advance { ms: 500 },
            FetchFailed { pick: 0, kind: 3 },
        ]);
        let mut shared = open(0);
        shared.extend([
            msg(1),
            msg(2),
            msg(3),
            StreamClosed { convo: 0, error: 1 },
            Advance { ms: 1000 },
            StreamOpened {
                convo: 0,
                stale: false,
            },
        ]);
        shared.push(Page {
            pick: 0,
            messages: vec![(2, 2, 1), (3, 3, 1), (3, 33, 1), (4, 4, 1)],
            fill: false,
        });
        let mut restart = open(0);
        restart.extend([
            msg(1),
            msg(2),
            Restart,
            StreamOpened {
                convo: 0,
                stale: false,
            },
        ]);
        restart.push(Page {
            pick: 0,
            messages: vec![(1, 1, 1), (2, 2, 1), (3, 3, 1)],
            fill: true,
        });
        vec![
            ("seed_1_2_5_6", input(seed)),
            ("gap_filled_by_stream", input(filled)),
            ("reconnect_then_catch_up", input(reconnect)),
            ("confirmed_hole", input(hole)),
            (
                "buffer_overflow",
                FuzzInput {
                    config: FuzzConfig {
                        max_buffered: 1,
                        ..FuzzConfig::default()
                    },
                    ..input(overflow)
                },
            ),
            ("not_member_clears", input(clear)),
            ("shared_seq_found_by_overlap", input(shared)),
            ("restart_mid_run", input(restart)),
        ]
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    fn bool(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }

    /// The `u32` that `derive(Arbitrary)` maps to variant `index` of `count`.
    fn variant(&mut self, index: u64, count: u64) {
        let x = (index << 32).div_ceil(count);
        debug_assert_eq!((x * count) >> 32, index);
        self.bytes(&(x as u32).to_le_bytes());
    }

    fn op(&mut self, op: &Op) {
        const VARIANTS: u64 = 12;
        match op {
            Op::Subscribe { convo, live } => {
                self.variant(0, VARIANTS);
                self.bytes(&[*convo]);
                self.bool(*live);
            }
            Op::Unsubscribe { convo } => {
                self.variant(1, VARIANTS);
                self.bytes(&[*convo]);
            }
            Op::StreamOpened { convo, stale } => {
                self.variant(2, VARIANTS);
                self.bytes(&[*convo]);
                self.bool(*stale);
            }
            Op::StreamMessage {
                convo,
                seq,
                id,
                epoch,
            } => {
                self.variant(3, VARIANTS);
                self.bytes(&[*convo]);
                self.bytes(&seq.to_le_bytes());
                self.bytes(&[*id, *epoch]);
            }
            Op::StreamInfo { convo, slow } => {
                self.variant(4, VARIANTS);
                self.bytes(&[*convo]);
                self.bool(*slow);
            }
            Op::Keepalive { convo } => {
                self.variant(5, VARIANTS);
                self.bytes(&[*convo]);
            }
            Op::StreamClosed { convo, error } => {
                self.variant(6, VARIANTS);
                self.bytes(&[*convo, *error]);
            }
            Op::Page {
                pick,
                messages,
                fill,
            } => {
                self.variant(7, VARIANTS);
                self.bytes(&[*pick]);
                for (a, b, c) in messages {
                    self.bool(true);
                    self.bytes(&[*a, *b, *c]);
                }
                self.bool(false);
                self.bool(*fill);
            }
            Op::FetchFailed { pick, kind } => {
                self.variant(8, VARIANTS);
                self.bytes(&[*pick, *kind]);
            }
            Op::Advance { ms } => {
                self.variant(9, VARIANTS);
                self.bytes(&ms.to_le_bytes());
            }
            Op::Resume { convo } => {
                self.variant(10, VARIANTS);
                self.bool(convo.is_some());
                if let Some(c) = convo {
                    self.bytes(&[*c]);
                }
            }
            Op::Restart => self.variant(11, VARIANTS),
        }
    }
}
