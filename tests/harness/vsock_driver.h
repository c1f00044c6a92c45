// A virtio-vsock driver for host-side tests and the vsock bench: the guest half of virtio
// 1.2 section 5.10 over a harness Guest (guest.h) whose queues 0, 1 and 2 are the receive,
// transmit and event queues.
//
// Buffers are laid out as Linux 6.1 lays them: each receive buffer is a 44-byte header
// descriptor and a 4 KiB payload descriptor, each transmit packet a header descriptor and a
// payload descriptor (up to 64 KiB). Buffers are pools in guest RAM, recycled as the device
// returns them.
//
// Streams follow the protocol as a careful guest would, with credit accounting both ways:
//   - towards the device, write() never sends more than the credit the device last granted
//     (peer buf_alloc - (tx_cnt - peer fwd_cnt)) and waits for CREDIT_UPDATEs otherwise, so a
//     device that forgets to tell the guest about freed space stalls the test (and fails it);
//   - from the device, every RW is checked against the credit this driver granted (its
//     buf_alloc and the fwd_cnt it last sent): an excess is counted in credit_violations(),
//     which tests assert to be 0. read() consumes bytes and sends a CREDIT_UPDATE when a
//     quarter of the buffer was consumed since the device was last told, or the device
//     believes less than a quarter is free; CREDIT_REQUEST is answered at once.
// Packets for no stream (RSTs for malformed packets, REQUESTs not yet accepted) wait in
// unclaimed().
//
// Every wait has a deadline; a wedged device fails the test instead of hanging it.
// Single-threaded; the Guest must outlive the driver.
#pragma once

#include <chrono>
#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "devices/vsock/connection.h"
#include "devices/vsock/malformed.h"
#include "devices/vsock/packet.h"
#include "tests/harness/guest.h"

namespace moss::harness {

using vsock::ConnKey;
using vsock::PacketHeader;

struct VsockPacket {
  PacketHeader header;
  std::vector<uint8_t> payload;
};

struct VsockDriverOptions {
  uint64_t guest_cid = 3;
  uint32_t rx_buffers = 64;             // Receive buffers kept posted (two descriptors each).
  uint32_t rx_buffer_bytes = 4096;      // Payload room of each (Linux's default).
  uint32_t tx_slots = 32;               // Transmit buffers.
  uint32_t tx_buffer_bytes = 64 * 1024; // Largest payload per packet (Linux's maximum).
  uint32_t event_buffers = 4;
  uint32_t buf_alloc = 256 * 1024;      // The receive buffer this guest grants each stream.
  std::chrono::milliseconds timeout{4000};  // For every wait.
  // Wait in create() for the TRANSPORT_RESET a new moss-vsock frontend gets, so it cannot
  // reset streams the test opens right after (a Linux guest gets it at probe time, before
  // any program runs). Off for devices that keep the event queue (QEMU's frontend).
  bool await_transport_reset = true;
};

// Bytes received and not yet read: a FIFO that copies each byte in once and out once.
class Inbox {
 public:
  bool empty() const { return head_ == data_.size(); }
  size_t size() const { return data_.size() - head_; }
  void append(std::span<const uint8_t> b) { data_.insert(data_.end(), b.begin(), b.end()); }
  std::vector<uint8_t> take(size_t n) {
    n = std::min(n, size());
    std::vector<uint8_t> out(data_.begin() + static_cast<ptrdiff_t>(head_), data_.begin() + static_cast<ptrdiff_t>(head_ + n));
    head_ += n;
    if (head_ == data_.size()) {
      data_.clear();
      head_ = 0;
    } else if (head_ > data_.size() / 2) {
      data_.erase(data_.begin(), data_.begin() + static_cast<ptrdiff_t>(head_));
      head_ = 0;
    }
    return out;
  }

 private:
  std::vector<uint8_t> data_;
  size_t head_ = 0;
};

// One stream as the guest sees it.
struct GuestStream {
  ConnKey key;
  bool connected = false;
  bool reset = false;          // An RST arrived.
  uint32_t peer_shutdown = 0;  // SHUTDOWN flags from the device.
  // Device -> guest: the credit this guest grants.
  uint32_t buf_alloc = 0;
  uint32_t rx_cnt = 0;
  uint32_t fwd_cnt = 0;       // Bytes read() consumed.
  uint32_t told_fwd_cnt = 0;  // fwd_cnt in the last packet sent.
  Inbox inbox;
  uint64_t credit_violations = 0;
  uint64_t credit_requests = 0;  // CREDIT_REQUESTs from the device.
  // Guest -> device: the credit the device grants.
  uint32_t peer_buf_alloc = 0;
  uint32_t peer_fwd_cnt = 0;
  uint32_t tx_cnt = 0;
  uint32_t credit() const {
    uint32_t in_flight = tx_cnt - peer_fwd_cnt;
    return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
  }
  bool eof() const { return inbox.empty() && (reset || (peer_shutdown & vsock::kShutdownSend)); }
};

class VsockDriver {
 public:
  // Options for the Guest: three queues, no device-specific features, the 8-byte config.
  static GuestOptions guest_options(uint16_t queue_size = 128, uint64_t memory_bytes = 32ull << 20);
  // Posts the receive and event buffers (the transmit queue is left untouched until used).
  static Result<std::unique_ptr<VsockDriver>> create(Guest& guest, VsockDriverOptions options = {});

  const VsockDriverOptions& options() const { return o_; }
  // guest_cid from the config space read at connect.
  uint64_t config_guest_cid() const;

  // ---- Packets ----
  // A header from this guest for `key`, carrying the stream's credit (if it is a stream).
  PacketHeader header(ConnKey key, vsock::Op op, uint32_t len = 0, uint32_t flags = 0);
  // One packet: a header descriptor and, with a payload, a payload descriptor. Waits for a
  // free transmit buffer if all are in flight.
  Result<void> send(const PacketHeader& h, std::span<const uint8_t> payload = {});
  // Any chain at all (malformed.h), from buffers allocated for it.
  Result<void> send_chain(const vsock::testing::TxChain& chain);
  // Waits until the device has returned every transmit buffer (read every packet sent).
  Result<void> wait_sent();
  // Takes in everything the device returned; if nothing, waits until `until` (at most 20 ms,
  // the event queue is only polled) for the receive queue's interrupt. True if anything came. Errors: the device closed the connection or
  // signalled the receive queue's error eventfd.
  Result<bool> pump(std::chrono::steady_clock::time_point until);
  // Pumps until pred() holds; Error (kErrTimedOut) after options().timeout.
  Result<void> wait_for(const std::function<bool()>& pred, const char* what);

  std::deque<VsockPacket>& unclaimed() { return unclaimed_; }
  // Waits for an unclaimed packet matching `pred` and removes it.
  Result<VsockPacket> take_unclaimed(const std::function<bool(const VsockPacket&)>& pred, const char* what);
  uint32_t transport_resets() const { return transport_resets_; }
  // Whether used receive buffers are posted again (off: the device starves once they are used).
  void set_rx_replenish(bool on) { replenish_ = on; }
  Result<void> post_rx(uint32_t n);
  uint32_t rx_posted() const { return static_cast<uint32_t>(rx_posted_); }
  uint64_t malformed_from_device() const { return device_errors_; }

  // ---- Streams ----
  // Guest-initiated: REQUEST to `host_port`, then RESPONSE (Ok) or RST (Error, ECONNREFUSED).
  Result<ConnKey> connect(uint32_t host_port, uint32_t guest_port);
  // Host-initiated: waits for a REQUEST to `port` and answers RESPONSE (accept) or RST (refuse).
  Result<ConnKey> accept(uint32_t port);
  Result<void> refuse(uint32_t port);
  GuestStream& stream(ConnKey key);
  bool has_stream(ConnKey key) const { return streams_.contains(key); }
  // Sends all of `bytes`, within the device's credit. Error if the stream is reset.
  Result<void> write(ConnKey key, std::span<const uint8_t> bytes);
  // At least one byte and at most `max`, waiting for them; empty at EOF (SHUTDOWN(SEND) or RST).
  Result<std::vector<uint8_t>> read(ConnKey key, size_t max);
  // Exactly n bytes, or fewer at EOF.
  Result<std::vector<uint8_t>> read_exactly(ConnKey key, size_t n);
  Result<void> shutdown(ConnKey key, uint32_t flags);
  Result<void> reset(ConnKey key);  // Sends RST and forgets the stream.
  void forget(ConnKey key) { streams_.erase(key); }
  uint64_t credit_violations() const;

 private:
  struct RxSlot {
    uint64_t header_gpa = 0;
    uint64_t payload_gpa = 0;
  };
  struct TxSlot {
    uint64_t header_gpa = 0;
    uint64_t payload_gpa = 0;
  };

  VsockDriver(Guest& guest, VsockDriverOptions o) : guest_(guest), o_(o) {}
  Result<void> init();
  Result<void> post_rx_slot(size_t slot);
  Result<void> post_event(uint64_t gpa);
  void reclaim_tx();
  void handle(VsockPacket p);
  void maybe_credit_update(GuestStream& s);
  std::chrono::steady_clock::time_point deadline() const { return std::chrono::steady_clock::now() + o_.timeout; }

  Guest& guest_;
  VsockDriverOptions o_;
  std::vector<RxSlot> rx_slots_;
  std::vector<size_t> rx_free_;           // Slots not posted.
  std::map<uint16_t, size_t> rx_posted_heads_;
  size_t rx_posted_ = 0;
  std::vector<TxSlot> tx_slots_;
  std::vector<size_t> tx_free_;
  std::map<uint16_t, std::optional<size_t>> tx_in_flight_;  // Head -> slot (none: a raw chain).
  std::map<uint16_t, uint64_t> event_heads_;
  std::map<ConnKey, GuestStream> streams_;
  std::deque<VsockPacket> unclaimed_;
  uint32_t transport_resets_ = 0;
  uint64_t device_errors_ = 0;
  bool replenish_ = true;
  std::vector<PacketHeader> owed_;  // Packets to send once the current pump is done.
};

}  // namespace moss::harness
