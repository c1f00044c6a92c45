#include "ipc/json.h"

#include <capnp/compat/json.h>

namespace moss::ipc {
namespace {

// capnp's Handler has a protected, non-virtual destructor; ours live on the stack.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class Uint64AsNumber final : public capnp::JsonCodec::Handler<uint64_t> {
 public:
  void encode(const capnp::JsonCodec&, uint64_t value, capnp::JsonValue::Builder output) const override {
    output.setNumber(static_cast<double>(value));
  }
  uint64_t decode(const capnp::JsonCodec&, capnp::JsonValue::Reader input) const override {
    return static_cast<uint64_t>(input.getNumber());
  }
};

class Int64AsNumber final : public capnp::JsonCodec::Handler<int64_t> {
 public:
  void encode(const capnp::JsonCodec&, int64_t value, capnp::JsonValue::Builder output) const override {
    output.setNumber(static_cast<double>(value));
  }
  int64_t decode(const capnp::JsonCodec&, capnp::JsonValue::Reader input) const override {
    return static_cast<int64_t>(input.getNumber());
  }
};

#pragma GCC diagnostic pop

}  // namespace

std::string to_json(capnp::DynamicStruct::Reader value, bool pretty) {
  Uint64AsNumber u64;
  Int64AsNumber i64;
  capnp::JsonCodec codec;
  codec.setPrettyPrint(pretty);
  codec.addTypeHandler(u64);
  codec.addTypeHandler(i64);
  codec.handleByAnnotation(value.getSchema());
  kj::String text = codec.encode(value);
  return std::string(text.cStr(), text.size()) + "\n";
}

}  // namespace moss::ipc
