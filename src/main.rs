use std::process::ExitCode;

use clap::Parser;
use orgd::auth::{Claims, mint_token};
use orgd::config::{Cli, Command, JwtKey, LogFormat, TokenArgs};

// One work-stealing runtime with a worker per core serves every call and the
// background work (diesel-async's migrations also need it: they block in place).
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format);
            orgd::server::serve(args).await
        }
        Command::Token(args) => print_token(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("orgd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn print_token(args: &TokenArgs) -> anyhow::Result<()> {
    let (JwtKey::Secret(secret) | JwtKey::DevSecret(secret)) = args.jwt.key()? else {
        anyhow::bail!(
            "orgd token signs with an HS256 secret; with a public key or a JWKS, get tokens from your identity provider"
        );
    };
    let mut claims = Claims::new(
        &args.jwt.jwt_issuer,
        &args.jwt.jwt_audience,
        &args.sub,
        args.ttl,
    );
    claims.email = args.email.clone();
    claims.name = args.name.clone();
    claims.email_verified = !args.unverified;
    if args.jwt.jwt_secret.is_none() {
        // Said, because a token signed in another folder's data directory is
        // refused by a server whose secret is elsewhere.
        eprintln!(
            "orgd token: signed with the development secret {}",
            args.jwt.dev_secret_path().display()
        );
    }
    println!("{}", mint_token(&secret, &claims)?);
    Ok(())
}
