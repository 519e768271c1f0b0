//! Shared by the TensorRT-LLM adapter tests.

pub(crate) mod server;
