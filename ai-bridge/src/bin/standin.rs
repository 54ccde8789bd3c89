//! `chorus-standin-llm`: the stand-in model server (not a model) for demos and load tests.
//! It speaks the OpenAI-compatible API on `--listen` and streams scripted answers.

use chorus_ai_bridge::standin::{Behavior, StandIn};
use clap::Parser;

/// A stand-in for an OpenAI-compatible model server: scripted answers, no model.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (loopback by default: this is test tooling).
    #[arg(long, default_value = "127.0.0.1:8090", env = "CHORUS_STANDIN_LISTEN")]
    listen: String,
    /// Tokens streamed per second (0: as fast as possible).
    #[arg(long, default_value_t = 50.0)]
    tokens_per_second: f64,
    /// Characters per token.
    #[arg(long, default_value_t = 4)]
    token_chars: usize,
    /// A file whose text is the answer (default: a sample with every markdown kind).
    #[arg(long)]
    answer_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    let answer = match &args.answer_file {
        Some(path) => Some(std::fs::read_to_string(path)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let standin = StandIn::serve(
        listener,
        Behavior {
            answer,
            tokens_per_second: args.tokens_per_second,
            token_chars: args.token_chars.max(1),
            ..Behavior::default()
        },
    )?;
    println!(
        "stand-in model server (not a model) on {}",
        standin.base_url()
    );
    tokio::signal::ctrl_c().await?;
    standin.stop();
    Ok(())
}
