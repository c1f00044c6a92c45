#include "ipc/json.h"

#include <capnp/compat/json.h>

namespace moss::ipc {
namespace {

// capnp's Handler has a protected, non-virtual destructor; ours live on the stack.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
// A 64-bit integer as a JSON number (capnp's default is a string, for precision that counts
// and sizes here never need).
template <typename T>
class AsNumber final : public capnp::JsonCodec::Handler<T> {
 public:
  void encode(const capnp::JsonCodec&, T value, capnp::JsonValue::Builder output) const override {
    output.setNumber(static_cast<double>(value));
  }
  T decode(const capnp::JsonCodec&, capnp::JsonValue::Reader input) const override {
    return static_cast<T>(input.getNumber());
  }
};

#pragma GCC diagnostic pop

}  // namespace

std::string to_json(capnp::DynamicStruct::Reader value, bool pretty) {
  AsNumber<uint64_t> u64;
  AsNumber<int64_t> i64;
  capnp::JsonCodec codec;
  codec.setPrettyPrint(pretty);
  codec.addTypeHandler(u64);
  codec.addTypeHandler(i64);
  codec.handleByAnnotation(value.getSchema());
  kj::String text = codec.encode(value);
  return std::string(text.cStr(), text.size()) + "\n";
}

}  // namespace moss::ipc
