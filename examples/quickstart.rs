//! The main job until the gateway lands: hash a prompt into KV blocks the way the router will,
//! then stream it through the echo engine the way a client would.
//!
//! ```text
//! cargo run --release --example quickstart [-- --tokens N --block-size B --max-tokens M]
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

use dynamo::{BlockSize, EchoEngine, EngineExt, GenerateRequest};
use futures::StreamExt;

struct Options {
    tokens: u32,
    block_size: u32,
    max_tokens: u32,
}

impl Options {
    fn from_args() -> Result<Self, String> {
        let mut options = Options {
            tokens: 200,
            block_size: 64,
            max_tokens: 16,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let value: u32 = value
                .parse()
                .map_err(|_| format!("{flag} takes a whole number, got {value:?}"))?;
            match flag.as_str() {
                "--tokens" => options.tokens = value,
                "--block-size" => options.block_size = value,
                "--max-tokens" => options.max_tokens = value,
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(options)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::from_args()?;
    let block_size = BlockSize::new(options.block_size)?;
    let request = GenerateRequest::new(
        "quickstart-1",
        "echo",
        (0..options.tokens).collect::<Vec<_>>(),
    )
    .with_max_tokens(options.max_tokens);

    let hasher = request.block_hasher(block_size);
    let blocks = hasher.hash_blocks(&request.tokens);
    println!(
        "prompt: {} tokens -> {} full blocks of {} tokens ({} tokens left over, not hashed)",
        request.tokens.len(),
        blocks.len(),
        block_size,
        request.tokens.len() % block_size.as_usize()
    );
    for (i, block) in blocks.iter().enumerate() {
        println!(
            "  block {i}: local {}  sequence {}",
            block.local, block.sequence
        );
    }

    let started = Instant::now();
    let mut engine = EchoEngine::new().with_token_delay(Duration::from_millis(20));
    let mut stream = engine.generate(request).await?;
    print!("echo engine streams:");
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for token in &chunk.tokens {
            print!(" {token}");
        }
        std::io::stdout().flush()?;
        if let (Some(reason), Some(usage)) = (chunk.finish_reason, chunk.usage) {
            println!();
            println!(
                "finished: {reason:?} after {} of {} prompt tokens in {:.0?}",
                usage.completion_tokens,
                usage.prompt_tokens,
                started.elapsed()
            );
        }
    }
    Ok(())
}
