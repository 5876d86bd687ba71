//! A canonical, sorted listing of what in a protobuf package decides its wire format
//! and gRPC paths: every message field (number, label, type, oneof, presence), every
//! enum value and every rpc with its streaming shape. Comments, options that do not
//! touch the wire, and declaration order are left out, so two independently written
//! `.proto` files with the same wire format list the same lines.

use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// The listing of `package` (e.g. `apache.rocketmq.v2`) within `set`.
pub fn schema_lines(set: &FileDescriptorSet, package: &str) -> Vec<String> {
    let scope = format!(".{package}");
    let mut lines = Vec::new();
    for file in set.file.iter().filter(|file| file.package() == package) {
        for message in &file.message_type {
            message_lines(&scope, message, &mut lines);
        }
        for enumeration in &file.enum_type {
            enum_lines(&scope, enumeration, &mut lines);
        }
        for service in &file.service {
            for method in &service.method {
                let stream = |streaming: bool| if streaming { "stream " } else { "" };
                lines.push(format!(
                    "rpc /{package}.{}/{} ({}{}) returns ({}{})",
                    service.name(),
                    method.name(),
                    stream(method.client_streaming()),
                    method.input_type(),
                    stream(method.server_streaming()),
                    method.output_type(),
                ));
            }
        }
    }
    lines.sort();
    lines
}

fn message_lines(scope: &str, message: &DescriptorProto, lines: &mut Vec<String>) {
    let name = format!("{scope}.{}", message.name());
    let map_entry = message.options.as_ref().and_then(|options| options.map_entry).unwrap_or(false);
    lines.push(format!("message {name}{}", if map_entry { " map_entry" } else { "" }));
    for field in &message.field {
        let mut line =
            format!("field {name}.{} = {} {:?} {:?}", field.name(), field.number(), field.label(), field.r#type());
        if !field.type_name().is_empty() {
            line.push_str(&format!(" {}", field.type_name()));
        }
        if field.proto3_optional() {
            line.push_str(" proto3_optional");
        } else if let Some(index) = field.oneof_index {
            let oneof = message.oneof_decl.get(usize::try_from(index).unwrap_or(usize::MAX));
            line.push_str(&format!(" oneof {}", oneof.map_or("?", |oneof| oneof.name())));
        }
        if let Some(packed) = field.options.as_ref().and_then(|options| options.packed) {
            line.push_str(&format!(" packed={packed}"));
        }
        lines.push(line);
    }
    for nested in &message.nested_type {
        message_lines(&name, nested, lines);
    }
    for enumeration in &message.enum_type {
        enum_lines(&name, enumeration, lines);
    }
}

fn enum_lines(scope: &str, enumeration: &EnumDescriptorProto, lines: &mut Vec<String>) {
    let name = format!("{scope}.{}", enumeration.name());
    for value in &enumeration.value {
        lines.push(format!("enum {name}.{} = {}", value.name(), value.number()));
    }
}
