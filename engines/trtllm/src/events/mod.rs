//! TensorRT-LLM's KV cache events, read from `trtllm-serve`'s `POST /kv_cache_events` and
//! turned into the router's [`KvEvent`](dynamo_core::KvEvent)s.
//!
//! `trtllm-serve` publishes no event socket: it buffers its KV cache manager's events (when
//! `kv_cache_config.event_buffer_max_size` > 0 and block reuse is on) and answers the buffer,
//! as a JSON list, to each `POST /kv_cache_events`, emptying it. [`KvEventPoller`] polls that
//! endpoint; [`TrtllmEventDecoder`] turns each answer into events: `created` (a new, empty
//! cache) clears what the index knew of the server, `stored` blocks are hashed our way from
//! their token ids and chained from their parent, in the tier of their cache level (0 the
//! device, 1 host memory, 2 disk: `levels.rs`), `removed` blocks are resolved through the
//! engine hashes seen stored and removed from the tier they are in with every known block
//! stored after them (the server may not name those: `blocks.rs`), an `updated` cache level
//! moves a block between tiers, and priority changes and unknown types are skipped and
//! counted. The layout is in `wire.rs`.

mod blocks;
mod changes;
mod counts;
mod decode;
mod error;
mod levels;
mod poll;
mod wire;

pub use counts::EventCounts;
pub use decode::TrtllmEventDecoder;
pub use error::EventsError;
pub use poll::{KvEventPoller, KvEventStream};
