// The malformed packets a hostile guest can send a vsock device, written once and used twice:
// the harness acceptance test sends each to a real moss-vsock through a virtqueue
// (tests/harness/vsock_acceptance_test.cc), and the fuzz seeds (script.h) replay each against
// the parser and the connection table, so the fuzz corpus holds every case the acceptance test
// covers (issue 5, acceptance 5).
//
// Each case is sent on an established guest-initiated connection (Context::key) and is one or
// more transmit chains, each a list of device-readable byte strings and the sizes of any
// device-writable buffers.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "devices/vsock/connection.h"
#include "devices/vsock/packet.h"

namespace moss::vsock::testing {

struct Context {
  uint64_t guest_cid = 3;
  ConnKey key;                        // The established connection the case is sent on.
  uint32_t buf_alloc = 256 * 1024;    // The credit the device granted that connection.
};

struct TxChain {
  std::vector<std::vector<uint8_t>> readable;
  std::vector<uint32_t> writable;  // Sizes of device-writable buffers after the readable ones.
};

struct MalformedCase {
  const char* name;         // Test and seed names: "len-past-chain".
  const char* description;  // One line.
  // What the parser says about the last chain; nullopt: it parses, and the connection table
  // refuses it (credit violation, data after SHUTDOWN, ...).
  std::optional<Refusal> refusal;
  bool answered;            // The guest gets an RST for Context::key.
  bool closes;              // The connection (and its host socket) is closed.
  // Needs the device unable to tell the guest about new credit while the case runs (no
  // receive buffers), so "more than the credit" is exact.
  bool needs_rx_starved;
  std::function<std::vector<TxChain>(const Context&)> build;
};

const std::vector<MalformedCase>& malformed_cases();

// A well-formed header for Context::key: guest -> host, STREAM, buf_alloc 64 KiB.
PacketHeader guest_header(const Context& ctx, Op op, uint32_t len = 0, uint32_t flags = 0);
std::vector<uint8_t> header_bytes(const PacketHeader& h);

}  // namespace moss::vsock::testing
