#include "devices/vsock/malformed.h"

namespace moss::vsock::testing {
namespace {

// One chain: the header, then `payload` in a second buffer (as Linux lays packets out).
TxChain chain(const PacketHeader& h, std::vector<uint8_t> payload = {}) {
  TxChain c;
  c.readable.push_back(header_bytes(h));
  if (!payload.empty()) c.readable.push_back(std::move(payload));
  return c;
}

std::vector<TxChain> one(TxChain c) { return {std::move(c)}; }

}  // namespace

PacketHeader guest_header(const Context& ctx, Op op, uint32_t len, uint32_t flags) {
  PacketHeader h;
  h.src_cid = ctx.guest_cid;
  h.dst_cid = kHostCid;
  h.src_port = ctx.key.guest_port;
  h.dst_port = ctx.key.host_port;
  h.len = len;
  h.type = kTypeStream;
  h.op = static_cast<uint16_t>(op);
  h.flags = flags;
  h.buf_alloc = 64 * 1024;
  return h;
}

std::vector<uint8_t> header_bytes(const PacketHeader& h) {
  auto a = encode_header(h);
  return {a.begin(), a.end()};
}

const std::vector<MalformedCase>& malformed_cases() {
  static const std::vector<MalformedCase> cases = {
      {"short-header", "20 bytes: no header to answer", Refusal::kNoHeader, false, false, false,
       [](const Context& ctx) {
         auto b = header_bytes(guest_header(ctx, Op::kRw));
         b.resize(20);
         return one(TxChain{{b}, {}});
       }},
      {"len-past-chain", "RW whose len (100) is more than the 10 bytes the chain holds", Refusal::kLengthPastChain, true,
       true, false,
       [](const Context& ctx) { return one(chain(guest_header(ctx, Op::kRw, 100), std::vector<uint8_t>(10, 'x'))); }},
      {"len-too-large", "RW with len 2^28", Refusal::kLengthTooLarge, true, true, false,
       [](const Context& ctx) { return one(chain(guest_header(ctx, Op::kRw, 1u << 28), std::vector<uint8_t>(16, 'x'))); }},
      {"unknown-op", "op 42", Refusal::kOp, true, true, false,
       [](const Context& ctx) {
         PacketHeader h = guest_header(ctx, Op::kRw);
         h.op = 42;
         return one(chain(h));
       }},
      {"op-invalid", "op 0 (VIRTIO_VSOCK_OP_INVALID)", Refusal::kOp, true, true, false,
       [](const Context& ctx) { return one(chain(guest_header(ctx, Op::kInvalid))); }},
      {"seqpacket-type", "type SEQPACKET, which is not offered", Refusal::kType, true, true, false,
       [](const Context& ctx) {
         PacketHeader h = guest_header(ctx, Op::kRw, 4);
         h.type = kTypeSeqpacket;
         return one(chain(h, {'a', 'b', 'c', 'd'}));
       }},
      {"wrong-src-cid", "a source CID that is not the guest's", Refusal::kSrcCid, true, true, false,
       [](const Context& ctx) {
         PacketHeader h = guest_header(ctx, Op::kCreditUpdate);
         h.src_cid = ctx.guest_cid + 1;
         return one(chain(h));
       }},
      {"wrong-dst-cid", "addressed to the guest's own CID instead of the host", Refusal::kDstCid, true, true, false,
       [](const Context& ctx) {
         PacketHeader h = guest_header(ctx, Op::kRw, 1);
         h.dst_cid = ctx.guest_cid;
         return one(chain(h, {'z'}));
       }},
      {"payload-on-credit-update", "CREDIT_UPDATE carrying 8 payload bytes", Refusal::kPayloadOnControl, true, true,
       false, [](const Context& ctx) { return one(chain(guest_header(ctx, Op::kCreditUpdate, 8), std::vector<uint8_t>(8, 1))); }},
      {"shutdown-unknown-flags", "SHUTDOWN with flag 0x10", Refusal::kShutdownFlags, true, true, false,
       [](const Context& ctx) { return one(chain(guest_header(ctx, Op::kShutdown, 0, 0x10))); }},
      {"writable-in-transmit", "a transmit chain with a device-writable buffer", Refusal::kWritableBuffers, true, true,
       false,
       [](const Context& ctx) {
         TxChain c = chain(guest_header(ctx, Op::kRw));
         c.writable.push_back(64);
         return one(c);
       }},
      {"rst-malformed", "an RST of the wrong type: never answered", Refusal::kType, false, false, false,
       [](const Context& ctx) {
         PacketHeader h = guest_header(ctx, Op::kRst);
         h.type = 7;
         return one(chain(h));
       }},
      {"credit-violation", "RW bytes one more than the credit granted, with no credit update in between", std::nullopt,
       true, true, true,
       [](const Context& ctx) {
         std::vector<TxChain> out;
         for (uint32_t left = ctx.buf_alloc + 1; left > 0;) {
           uint32_t n = std::min(left, kMaxPayload);
           out.push_back(chain(guest_header(ctx, Op::kRw, n), std::vector<uint8_t>(n, 'c')));
           left -= n;
         }
         return out;
       }},
      {"data-after-shutdown", "RW after SHUTDOWN(SEND)", std::nullopt, true, true, false,
       [](const Context& ctx) {
         return std::vector<TxChain>{chain(guest_header(ctx, Op::kShutdown, 0, kShutdownSend)),
                                     chain(guest_header(ctx, Op::kRw, 3), {'l', 'a', 't'})};
       }},
      {"fwd-cnt-ahead", "CREDIT_UPDATE claiming 4096 bytes consumed that were never sent", std::nullopt, true, true, false,
       [](const Context& ctx) {
         PacketHeader h = guest_header(ctx, Op::kCreditUpdate);
         h.fwd_cnt = 4096;
         return one(chain(h));
       }},
      {"request-on-open-connection", "REQUEST on a connection that is already open", std::nullopt, true, true, false,
       [](const Context& ctx) { return one(chain(guest_header(ctx, Op::kRequest))); }},
  };
  return cases;
}

}  // namespace moss::vsock::testing
