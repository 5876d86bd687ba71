//! Byte-level checks that `apache.rocketmq.v2` messages encode exactly as the official
//! field numbers, wire types and enum values dictate, so the official clients read what
//! we write and we read what they write.

use std::collections::HashMap;

use prost::Message as _;
use prost::bytes::Bytes;
use raftmq_proto::rocketmq::v2::{
    ClientType, Code, DigestType, Encoding, Message, MessageType, Permission, Publishing, ReceiveMessageResponse,
    Resource, SendMessageRequest, Settings, Status, SystemProperties, TelemetryCommand, receive_message_response,
    settings, telemetry_command,
};

/// A message with a few fields of each kind set, and its exact encoding.
fn sample_message() -> (Message, Vec<u8>) {
    let message = Message {
        topic: Some(Resource { resource_namespace: String::new(), name: "T".into() }),
        user_properties: HashMap::from([("k".into(), "v".into())]),
        system_properties: Some(SystemProperties {
            tag: Some("a".into()),
            message_id: "id".into(),
            queue_offset: Some(5),
            delivery_attempt: Some(1),
            ..Default::default()
        }),
        body: Bytes::from_static(b"hi"),
    };
    #[rustfmt::skip]
    let bytes = vec![
        0x0a, 0x03,             // Message.topic: field 1, length-delimited
        0x12, 0x01, b'T',       //   Resource.name: field 2
        0x12, 0x06,             // Message.user_properties: field 2, one map entry
        0x0a, 0x01, b'k',       //   key: field 1
        0x12, 0x01, b'v',       //   value: field 2
        0x1a, 0x0c,             // Message.system_properties: field 3
        0x0a, 0x01, b'a',       //   tag: field 1
        0x1a, 0x02, b'i', b'd', //   message_id: field 3
        0x70, 0x05,             //   queue_offset: field 14, varint
        0x80, 0x01, 0x01,       //   delivery_attempt: field 16, varint (two-byte tag)
        0x22, 0x02, b'h', b'i', // Message.body: field 4
    ];
    (message, bytes)
}

#[test]
fn message_encodes_with_official_field_numbers() {
    let (message, expected) = sample_message();
    assert_eq!(message.encode_to_vec(), expected);
}

#[test]
fn send_message_request_wraps_messages_in_field_1() {
    let (message, message_bytes) = sample_message();
    let request = SendMessageRequest { messages: vec![message.clone(), message] };
    let mut expected = Vec::new();
    for _ in 0..2 {
        expected.extend_from_slice(&[0x0a, u8::try_from(message_bytes.len()).expect("sample is short")]);
        expected.extend_from_slice(&message_bytes);
    }
    assert_eq!(request.encode_to_vec(), expected);
    assert_eq!(SendMessageRequest::decode(expected.as_slice()).expect("valid encoding"), request);
}

#[test]
fn decoding_a_message_keeps_the_body_in_the_received_buffer() {
    let (_, message_bytes) = sample_message();
    let received = Bytes::from(message_bytes);
    let message = Message::decode(received.clone()).expect("valid encoding");
    assert_eq!(message.body, Bytes::from_static(b"hi"));
    let body_start = message.body.as_ptr() as usize;
    let buffer = received.as_ptr() as usize..received.as_ptr() as usize + received.len();
    assert!(buffer.contains(&body_start), "the body was copied out of the received buffer");
}

#[test]
fn optional_fields_keep_presence() {
    // An official client tells "no tag" from "empty tag"; proto3 `optional` must survive.
    let absent = SystemProperties { tag: None, ..Default::default() };
    let empty = SystemProperties { tag: Some(String::new()), ..Default::default() };
    assert_eq!(absent.encode_to_vec(), Vec::<u8>::new());
    assert_eq!(empty.encode_to_vec(), vec![0x0a, 0x00]);
    assert_eq!(SystemProperties::decode(&[0x0a, 0x00][..]).expect("valid").tag, Some(String::new()));
}

#[test]
fn receive_status_frame_is_field_1_with_code_20000() {
    let frame = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(Status {
            code: Code::Ok.into(),
            message: String::new(),
        })),
    };
    // 20000 as a varint is a0 9c 01.
    assert_eq!(frame.encode_to_vec(), vec![0x0a, 0x04, 0x08, 0xa0, 0x9c, 0x01]);

    let timestamp = prost_types::Timestamp { seconds: 1, nanos: 0 };
    let frame =
        ReceiveMessageResponse { content: Some(receive_message_response::Content::DeliveryTimestamp(timestamp)) };
    assert_eq!(frame.encode_to_vec(), vec![0x1a, 0x02, 0x08, 0x01]);
}

#[test]
fn telemetry_settings_carry_max_body_size_where_clients_read_it() {
    let command = TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(Settings {
            pub_sub: Some(settings::PubSub::Publishing(Publishing {
                topics: Vec::new(),
                max_body_size: 4 * 1024 * 1024,
                validate_message_type: false,
            })),
            ..Default::default()
        })),
    };
    #[rustfmt::skip]
    let expected = vec![
        0x12, 0x07,                   // TelemetryCommand.settings: field 2
        0x2a, 0x05,                   //   Settings.publishing: field 5
        0x10, 0x80, 0x80, 0x80, 0x02, //     Publishing.max_body_size: field 2, 4194304
    ];
    assert_eq!(command.encode_to_vec(), expected);
}

#[test]
fn enum_values_match_the_official_numbers() {
    let codes = [
        (Code::Ok, 20000),
        (Code::BadRequest, 40000),
        (Code::IllegalTopic, 40002),
        (Code::MessageNotFound, 40401),
        (Code::TopicNotFound, 40402),
        (Code::PayloadTooLarge, 41300),
        (Code::TooManyRequests, 42900),
        (Code::InternalServerError, 50001),
    ];
    for (code, number) in codes {
        assert_eq!(code as i32, number, "{code:?}");
    }
    assert_eq!(Code::from_str_name("TOPIC_NOT_FOUND"), Some(Code::TopicNotFound));

    let types = [MessageType::Normal, MessageType::Fifo, MessageType::Delay, MessageType::Transaction];
    assert_eq!(types.map(|t| t as i32), [1, 2, 3, 4]);
    assert_eq!(Permission::ReadWrite as i32, 4);
    assert_eq!(ClientType::PushConsumer as i32, 2);
    assert_eq!(ClientType::SimpleConsumer as i32, 3);
    assert_eq!([Encoding::Identity as i32, Encoding::Gzip as i32], [1, 2]);
    assert_eq!([DigestType::Crc32 as i32, DigestType::Md5 as i32, DigestType::Sha1 as i32], [1, 2, 3]);
}
