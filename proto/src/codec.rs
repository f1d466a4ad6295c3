//! The protobuf codec of every nasfleet RPC: prost's, with small starting buffers.
//!
//! tonic starts each stream's encode and decode buffer at 8 KiB. A
//! controller holds one agent stream per NAS, and nearly everything on it
//! (heartbeats, run updates) is a few hundred bytes, so at 10,000 agents
//! those two buffers alone were 160 MiB. They start at 1 KiB here and grow
//! for the messages that need more.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Starting size of a stream's encode and decode buffer.
const BUFFER_BYTES: usize = 1024;
/// tonic's default: how much encoded data a stream gathers before yielding it.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
