//! The fuzz harnesses: one function per decoder that reads bytes from the network, called by
//! the cargo-fuzz targets in `fuzz_targets/` and, on stable, by the corpus replay tests of the
//! crates that own the decoders (which include these files by path).

pub mod openai;
pub mod transport;
