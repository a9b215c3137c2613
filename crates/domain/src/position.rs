//! Where an event stands in a JetStream stream, and the one rule that says
//! whether an event was applied already.

/// A stream's incarnation and a sequence in it. A stream deleted and made
/// again (or restored, or replaced by a mirror) starts its sequences again;
/// its epoch, the time it was made, tells the incarnations apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPos {
    /// When the stream was made, in Unix nanoseconds (`None`: not known,
    /// from a trigger or a record older than epochs).
    pub epoch: Option<u64>,
    /// The sequence in it.
    pub seq: u64,
}

impl StreamPos {
    /// A position with no epoch known.
    pub fn seq(seq: u64) -> Self {
        StreamPos { epoch: None, seq }
    }

    /// Whether an event at `self` comes at or before one at `last`: from an
    /// older incarnation of the stream, or from the same (or an unknown)
    /// one at or below `last`'s sequence. Such an event is applied already.
    pub fn at_or_before(self, last: StreamPos) -> bool {
        match (self.epoch, last.epoch) {
            (Some(a), Some(b)) if a != b => a < b,
            _ => self.seq <= last.seq,
        }
    }

    /// A position from stored fields (`None` without a sequence).
    pub fn from_parts(seq: Option<u64>, epoch: Option<u64>) -> Option<Self> {
        seq.map(|seq| StreamPos { epoch, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::StreamPos;

    #[test]
    fn order_within_and_across_incarnations() {
        let at = |epoch: Option<u64>, seq| StreamPos { epoch, seq };
        for (event, last, before) in [
            (at(Some(1), 5), at(Some(1), 5), true),
            (at(Some(1), 4), at(Some(1), 5), true),
            (at(Some(1), 6), at(Some(1), 5), false),
            // A stream made again starts at 1: its events are new.
            (at(Some(2), 1), at(Some(1), 900), false),
            // An event of the old stream delivered late is stale.
            (at(Some(1), 901), at(Some(2), 3), true),
            // Unknown epochs (older records): the sequence decides.
            (at(None, 3), at(Some(1), 5), true),
            (at(Some(1), 6), at(None, 5), false),
            (at(None, 6), at(None, 5), false),
        ] {
            assert_eq!(event.at_or_before(last), before, "{event:?} / {last:?}");
        }
    }
}
