//! `ListSystemsResponse` written by hand instead of generated, so that a controller can encode the summaries of 10,000 systems once and send those bytes to every caller until the list changes.
//!
//! On the wire it is exactly the message `nasfleet.proto` declares
//! (`repeated SystemSummary systems = 1`); a receiver decodes it into
//! `systems` as the generated type would.

use crate::v1::SystemSummary;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

#[derive(Clone, PartialEq, Default)]
pub struct ListSystemsResponse {
    /// The systems, ordered by name (empty when built from [`ListSystemsResponse::encoded`]).
    pub systems: Vec<SystemSummary>,
    /// Field 1 for every system, encoded: sent as it is.
    encoded: Option<Bytes>,
}

impl ListSystemsResponse {
    pub fn new(systems: Vec<SystemSummary>) -> Self {
        ListSystemsResponse {
            systems,
            encoded: None,
        }
    }

    /// A response that sends `systems` as [`ListSystemsResponse::encode_systems`] wrote them.
    pub fn encoded(systems: Bytes) -> Self {
        ListSystemsResponse {
            systems: Vec::new(),
            encoded: Some(systems),
        }
    }

    /// `systems` in the form [`ListSystemsResponse::encoded`] takes.
    pub fn encode_systems(systems: &[SystemSummary]) -> Bytes {
        let len = prost::encoding::message::encoded_len_repeated(1, systems);
        let mut buf = Vec::with_capacity(len);
        for system in systems {
            prost::encoding::message::encode(1, system, &mut buf);
        }
        Bytes::from(buf)
    }
}

impl std::fmt::Debug for ListSystemsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("ListSystemsResponse");
        match &self.encoded {
            Some(bytes) => out.field("encoded_bytes", &bytes.len()),
            None => out.field("systems", &self.systems),
        };
        out.finish()
    }
}

impl prost::Message for ListSystemsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.encoded {
            Some(bytes) => buf.put_slice(bytes),
            None => {
                for system in &self.systems {
                    prost::encoding::message::encode(1, system, buf);
                }
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => prost::encoding::message::merge_repeated(wire_type, &mut self.systems, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match &self.encoded {
            Some(bytes) => bytes.len(),
            None => prost::encoding::message::encoded_len_repeated(1, &self.systems),
        }
    }

    fn clear(&mut self) {
        self.systems.clear();
        self.encoded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::SystemStatus;
    use prost::Message;

    fn summaries() -> Vec<SystemSummary> {
        (0..3)
            .map(|i| SystemSummary {
                name: format!("nas{i}"),
                status: SystemStatus::Online as i32,
                pools: vec!["tank".into()],
                last_seen_unix_ms: 1_700_000_000_000 + i,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn encoded_once_or_each_time_the_bytes_are_the_same_and_decode_back() {
        let systems = summaries();
        let built = ListSystemsResponse::new(systems.clone()).encode_to_vec();
        let kept = ListSystemsResponse::encoded(ListSystemsResponse::encode_systems(&systems));
        assert_eq!(kept.encoded_len(), built.len());
        assert_eq!(kept.encode_to_vec(), built);
        let decoded = ListSystemsResponse::decode(built.as_slice()).unwrap();
        assert_eq!(decoded, ListSystemsResponse::new(systems));
        assert_eq!(
            ListSystemsResponse::decode(&[][..]).unwrap(),
            ListSystemsResponse::default()
        );
    }
}
