//! `coord pub` and `coord sub`.

use std::{io::Read as _, process::ExitCode};

use serde_json::json;
use tokio_stream::StreamExt as _;

use super::{CliError, ClientArgs, Output};
use crate::pb::{
    ChannelSubscription, PublishRequest, StreamPosition, SubscribeRequest, pub_sub_service_client::PubSubServiceClient,
    subscribe_response::Event,
};

/// Publishes MESSAGE, or standard input when it is `-` or absent.
pub async fn publish(args: &ClientArgs, channel: String, message: Option<String>) -> Result<ExitCode, CliError> {
    let payload = match message.as_deref() {
        Some("-") | None => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes)?;
            bytes
        }
        Some(text) => text.as_bytes().to_vec(),
    };
    let mut c = PubSubServiceClient::new(args.channel().await?);
    let req = PublishRequest { channel, payload: payload.into(), ..Default::default() };
    let r = c.publish(args.request(req)).await?.into_inner();
    args.print(
        &json!({ "mode": r.mode().as_str_name(), "offset": r.offset, "epoch": r.epoch, "receivers": r.receivers }),
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints messages as they come, until Ctrl-C or the stream ends.
pub async fn subscribe(
    args: &ClientArgs,
    channels: Vec<String>,
    patterns: Vec<String>,
    from: Option<String>,
) -> Result<ExitCode, CliError> {
    let since = match from {
        None => None,
        Some(text) => {
            let (offset, epoch) = text
                .split_once('@')
                .and_then(|(o, e)| Some((o.parse().ok()?, e.to_owned())))
                .ok_or_else(|| CliError::Usage(format!("--from {text:?}: expected OFFSET@EPOCH")))?;
            Some(StreamPosition { offset, epoch })
        }
    };
    let mut c = PubSubServiceClient::new(args.channel().await?);
    let channels = channels.into_iter().map(|channel| ChannelSubscription { channel, since: since.clone() }).collect();
    let mut request = tonic::Request::new(SubscribeRequest { channels, patterns });
    *request.metadata_mut() = args.metadata();
    let mut stream = c.subscribe(request).await?.into_inner();
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(event) = event else { return Ok(ExitCode::SUCCESS) };
        let value = match event?.event {
            Some(Event::Message(m)) => json!({
                "channel": m.channel, "offset": m.offset, "epoch": m.epoch,
                "payload": String::from_utf8_lossy(&m.payload), "published_at_ms": m.published_at_ms,
            }),
            Some(Event::Recovery(r)) => json!({ "recovery": r.channel, "recovered": r.recovered, "reason": r.reason }),
            Some(Event::Subscribed(s)) if args.output == Output::Json => {
                json!({ "subscribed": s.channels.iter().map(|c| c.channel.clone()).collect::<Vec<_>>(), "patterns": s.patterns })
            }
            _ => continue,
        };
        match args.output {
            Output::Json => println!("{value}"),
            Output::Table => match (value.get("channel"), value.get("payload")) {
                (Some(ch), Some(p)) => {
                    println!("{} {} {}", ch.as_str().unwrap_or(""), value["offset"], p.as_str().unwrap_or(""))
                }
                _ => println!("{value}"),
            },
        }
    }
}
