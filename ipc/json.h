// JSON for people and other programs (`moss stats --json`, a worker's --print-capabilities),
// encoded from Cap'n Proto structs by capnp's JsonCodec: keys come from the schema ($Json.name
// gives the snake_case ones), strings are escaped by the codec.
//
// Unlike JsonCodec's default, 64-bit integers are JSON numbers, not strings, as readers of
// these outputs (jq, QEMU) expect; above 2^53 they lose precision like any JSON number.
#pragma once

#include <capnp/dynamic.h>

#include <string>

namespace moss::ipc {

// The struct as one JSON object and a newline; `pretty` adds spaces (and line breaks when it
// is long).
std::string to_json(capnp::DynamicStruct::Reader value, bool pretty = true);

template <typename Reader>
std::string to_json(Reader value, bool pretty = true) {
  return to_json(capnp::DynamicStruct::Reader(value), pretty);
}

}  // namespace moss::ipc
