//! Calls any method by path with raw protobuf bytes, so tests can enumerate
//! methods from the descriptor instead of naming them.

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Calls `path` with `message` and an optional bearer `token`; returns the
/// first response message, so that a server-streaming method (which goes on
/// streaming) answers like a unary one.
pub async fn call(
    channel: &Channel,
    path: &str,
    message: Vec<u8>,
    token: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut stream = grpc
        .server_streaming(request, PathAndQuery::try_from(path).unwrap(), RawCodec)
        .await?
        .into_inner();
    // Dropping the stream after its first message cancels the call.
    stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("the call ended without a response message"))
}

/// An encoded request for `input` whose field at `org_field` (a path of field
/// names; none if empty) holds `org`, every other field left empty.
pub fn request(
    input: &prost_reflect::MessageDescriptor,
    org_field: &[String],
    org: &str,
) -> Vec<u8> {
    use prost::Message;
    use prost_reflect::{DynamicMessage, ReflectMessage, Value};
    fn set(message: &mut DynamicMessage, path: &[String], org: &str) {
        let field = message.descriptor().get_field_by_name(&path[0]).unwrap();
        if path.len() == 1 {
            message.set_field(&field, Value::String(org.to_owned()));
        } else {
            let mut inner = DynamicMessage::new(field.kind().as_message().unwrap().clone());
            set(&mut inner, &path[1..], org);
            message.set_field(&field, Value::Message(inner));
        }
    }
    let mut message = DynamicMessage::new(input.clone());
    if !org_field.is_empty() {
        set(&mut message, org_field, org);
    }
    message.encode_to_vec()
}
