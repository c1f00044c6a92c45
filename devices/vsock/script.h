// The input format of fuzz/fuzz_vsock_packet: a script of guest packets and host events run
// against parse_packet and a ConnectionTable, with the table's promises checked after every
// step (a broken one traps). Its seeds (fuzz/corpus/fuzz_vsock_packet/) are built here from
// the cases in malformed.h plus whole well-formed sessions, by fuzz_seeds_test.cc.
//
// Format: one config byte, then records. Config: buf_alloc = 256 << (b & 7) bytes (256 to
// 32 KiB), max_connections = 1 + ((b >> 3) & 3), max_queued_resets = 4. Each record starts
// with a tag byte (taken modulo 8); missing bytes at the end read as 0.
//   0 PACKET   u16 n, u8 cut, u8 writable, then n bytes: a transmit chain whose readable
//              bytes are split in two at cut % (n + 1), followed by a `writable`-byte buffer.
//              A kConnect it causes succeeds if the port is even.
//   1 CONNECT  u32 port: a host program's "CONNECT <port>".
//   2 READABLE u8 i: the host socket of connection i (in key order, modulo their number) is readable.
//   3 RX       u16 room, u16 r: next_rx(room); for a data item r says what the read did:
//              0xffff would block, 0xfffe failed, 0 EOF (0xfffd: EOF, peer closed), else
//              1 + r % max_bytes bytes read.
//   4 WRITTEN  u8 i, u32 n: n % (pending + 1) bytes of connection i's buffer were written.
//   5 TICK     u16 ms: time passes; expire().
//   6 EOF      u8 i, u8 closed: connection i's host program sent EOF.
//   7 FAILED   u8 i: connection i's host socket failed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "devices/vsock/connection.h"
#include "devices/vsock/malformed.h"

namespace moss::vsock::testing {

enum class Tag : uint8_t { kPacket, kConnect, kReadable, kRx, kWritten, kTick, kEof, kFailed };

inline constexpr uint64_t kScriptGuestCid = 3;

// Builds scripts.
class ScriptWriter {
 public:
  // config: see the format above.
  explicit ScriptWriter(uint8_t config) { bytes_.push_back(config); }
  ScriptWriter& packet(const TxChain& c);
  ScriptWriter& connect(uint32_t port);
  ScriptWriter& readable(uint8_t index);
  ScriptWriter& rx(uint16_t room, uint16_t read = 0);
  ScriptWriter& written(uint8_t index, uint32_t n);
  ScriptWriter& tick(uint16_t ms);
  ScriptWriter& eof(uint8_t index, bool closed);
  ScriptWriter& failed(uint8_t index);
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// What a script did, for the seeds test.
struct ScriptOutcome {
  uint64_t refused_packets = 0;     // By the parser.
  uint64_t resets_to_guest = 0;     // RSTs the table handed to next_rx.
  uint64_t protocol_violations = 0;
  uint64_t closes = 0;              // kClose actions.
  size_t connections_left = 0;
};

// Runs a script; traps (__builtin_trap) if the table breaks a promise.
ScriptOutcome run_script(std::span<const uint8_t> script);

// buf_alloc for a config byte.
constexpr uint32_t script_buf_alloc(uint8_t config) { return 256u << (config & 7); }

}  // namespace moss::vsock::testing
