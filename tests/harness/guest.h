// A "guest" for host-side device tests: guest RAM in a sealed memfd, and a vhost-user frontend
// that connects it to a backend process the way a VMM would, with our own virtqueue code
// (devices/virtio/driver.h) playing the guest driver.
//
// Guest::connect does the whole handshake: features (EVENT_IDX, INDIRECT_DESC and the blk
// features when offered), protocol features (MQ, REPLY_ACK, CONFIG, INFLIGHT_SHMFD), owner,
// config space, the inflight buffer when offered, the memory table, and per queue: size, base,
// addresses, real eventfds for kick, call and err, and enable. Every control reply is awaited
// with a deadline (SO_RCVTIMEO) and every wait for a completion has one too, so a wedged
// backend fails the test instead of hanging it.
//
// Reconnect: disconnect() drops the socket and leaves everything in guest memory as it is
// (rings, requests in flight, the inflight buffer); reconnect() connects again and hands the
// backend the same memory and inflight buffer with each ring's base set to its used index, as
// QEMU does when its backend restarts. A backend that tracks inflight descriptors then
// resubmits what it had not completed.
//
// Single-threaded; the Guest must outlive the DriverQueues it hands out.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "devices/virtio/driver.h"
#include "vhost-user/frontend.h"

namespace moss::harness {

// Virtio feature bits the harness knows (virtio 1.2, 5.2.3 and 6).
namespace feature {
constexpr int kBlkSizeMax = 1;
constexpr int kBlkSegMax = 2;
constexpr int kBlkRo = 5;
constexpr int kBlkBlkSize = 6;
constexpr int kBlkFlush = 9;
constexpr int kBlkTopology = 10;
constexpr int kBlkMq = 12;
constexpr int kBlkDiscard = 13;
constexpr int kBlkWriteZeroes = 14;
constexpr int kIndirectDesc = 28;
constexpr int kEventIdx = 29;
constexpr int kVersion1 = 32;
}  // namespace feature

// Errors from waits carry one of these in Error::err, so callers can tell the outcomes apart.
constexpr int kErrTimedOut = ETIMEDOUT;       // Nothing happened before the deadline.
constexpr int kErrDisconnected = ECONNRESET;  // The backend closed the vhost-user socket.
constexpr int kErrRingError = EIO;            // The backend signalled the queue's err eventfd.

// Guest RAM: one memfd, its size sealed, mapped shared at guest physical address 0.
class GuestRam {
 public:
  static Result<std::unique_ptr<GuestRam>> create(uint64_t bytes);
  ~GuestRam();
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  int fd() const { return fd_.get(); }
  uint64_t size() const { return size_; }
  uint8_t* host() const { return host_; }
  const GuestMemory& memory() const { return memory_; }

  // A fresh, zeroed range of guest memory (a bump allocator); Error when RAM is full.
  Result<uint64_t> alloc(uint64_t bytes, uint64_t align = 4096);
  // Host view of [gpa, gpa + len); the range must lie in RAM (our own bug otherwise).
  std::span<uint8_t> bytes(uint64_t gpa, uint64_t len) const;

 private:
  GuestRam(UniqueFd fd, uint8_t* host, uint64_t size);
  UniqueFd fd_;
  uint8_t* host_;
  uint64_t size_;
  uint64_t next_ = 0;
  GuestMemory memory_;
};

struct GuestOptions {
  uint64_t memory_bytes = 16ull << 20;
  uint32_t num_queues = 1;
  uint16_t queue_size = 128;
  bool event_idx = true;  // Offer VIRTIO_F_EVENT_IDX (acked if the backend offers it).
  bool indirect = true;   // Offer VIRTIO_F_INDIRECT_DESC.
  bool inflight = true;   // Use INFLIGHT_SHMFD when the backend offers it.
  // Device feature bits to accept when offered (the transport bits above are added).
  uint64_t device_features = (1ull << feature::kBlkSizeMax) | (1ull << feature::kBlkSegMax) |
                             (1ull << feature::kBlkRo) | (1ull << feature::kBlkBlkSize) |
                             (1ull << feature::kBlkFlush) | (1ull << feature::kBlkTopology) |
                             (1ull << feature::kBlkMq) | (1ull << feature::kBlkDiscard) |
                             (1ull << feature::kBlkWriteZeroes);
  uint32_t config_bytes = 60;  // virtio-blk config space up to write_zeroes_may_unmap.
  // For every control reply and every wait for a completion.
  std::chrono::milliseconds timeout{5000};
  // How long connect() keeps retrying a socket that is not there or not listening yet.
  std::chrono::milliseconds connect_timeout{5000};
};

// The driver's view of one inflight region (the spec's QueueRegionSplit).
struct InflightQueue {
  uint16_t version = 0;
  uint16_t desc_num = 0;
  uint16_t used_idx = 0;
  uint32_t in_flight = 0;  // Descriptors whose `inflight` flag is set.
};

class Guest {
 public:
  // Connects to the backend at `socket_path` and brings every queue up with fresh RAM.
  static Result<std::unique_ptr<Guest>> connect(const std::string& socket_path, const GuestOptions& options = {});
  // The same over an already-connected socket (a backend started with `--fd`).
  static Result<std::unique_ptr<Guest>> adopt(UniqueFd socket, const GuestOptions& options = {});
  ~Guest();
  Guest(const Guest&) = delete;
  Guest& operator=(const Guest&) = delete;

  GuestRam& ram() { return *ram_; }
  const GuestMemory& memory() const { return ram_->memory(); }
  const GuestOptions& options() const { return options_; }
  uint64_t offered_features() const { return offered_features_; }
  uint64_t acked_features() const { return acked_features_; }
  bool has_feature(int f) const { return (acked_features_ >> f) & 1; }
  uint64_t protocol_features() const { return protocol_features_; }
  uint32_t backend_queues() const { return backend_queues_; }  // GET_QUEUE_NUM, or 1.
  // Config space as read at connect (empty without the CONFIG protocol feature).
  const std::vector<uint8_t>& config() const { return config_; }

  uint32_t num_queues() const { return static_cast<uint32_t>(queues_.size()); }
  virtio::DriverQueue& queue(uint32_t index);
  // Notifies the backend (writes the kick eventfd) unconditionally / if the ring asks for it.
  Result<void> kick(uint32_t index);
  Result<void> kick_if_needed(uint32_t index);
  // Sleeps until the backend signals queue `index`'s call eventfd. Errors (with err set):
  // kErrTimedOut, kErrDisconnected, kErrRingError.
  Result<void> wait_call(uint32_t index, std::chrono::steady_clock::time_point deadline);

  bool connected() const { return frontend_.has_value(); }
  vhost_user::Frontend& frontend();
  // Drops the vhost-user socket; rings, requests in flight and the inflight buffer stay.
  void disconnect();
  // Connects again (disconnect() first if still connected) and restarts every ring where
  // the backend left it. Needs the inflight buffer: without it the backend cannot know which
  // requests it had taken, and the caller should start a fresh Guest instead.
  Result<void> reconnect(const std::string& socket_path);
  // A VMM's restore: connects (disconnect() first if still connected) to a fresh backend,
  // negotiates, loads `state` (SET_DEVICE_STATE_FD + CHECK_DEVICE_STATE) before any ring
  // starts, then restarts every ring at its used index (a backend whose state holds no buffer
  // taken and not returned, as moss-vsock's). No inflight buffer needed.
  Result<void> restore(const std::string& socket_path, std::span<const uint8_t> state);
  // DEVICE_STATE save over the connection (every ring stopped first, see stop_queue()).
  Result<std::vector<uint8_t>> save_state();
  // Stops queue `index` with GET_VRING_BASE and returns the backend's next avail index.
  Result<uint32_t> stop_queue(uint32_t index);
  // A barrier, for a test about to check that something did not happen: returns once a moss
  // worker has handled every kick and message sent before the call. Two GET_FEATURES round
  // trips: a worker's event loop takes one vhost-user message per wake-up, and a kick already
  // pending when the first request arrives is handled in that same wake-up at the latest,
  // so before the second request is read.
  Result<void> sync();

  bool has_inflight() const { return inflight_fd_.valid(); }
  std::optional<InflightQueue> inflight(uint32_t index) const;

 private:
  struct Queue {
    uint64_t ring_gpa = 0;
    std::optional<virtio::DriverQueue> driver;
    UniqueFd kick, call, err;
  };

  Guest(std::unique_ptr<GuestRam> ram, const GuestOptions& options);
  static Result<std::unique_ptr<Guest>> create(const GuestOptions& options);
  Result<void> open_socket(const std::string& path);
  Result<void> use_socket(UniqueFd sock);
  Result<void> handshake(bool reconnecting, std::optional<std::span<const uint8_t>> state = std::nullopt);
  Result<void> start_queue(uint32_t index, uint16_t base);

  std::unique_ptr<GuestRam> ram_;
  GuestOptions options_;
  std::optional<vhost_user::Frontend> frontend_;
  std::vector<Queue> queues_;
  uint64_t offered_features_ = 0;
  uint64_t acked_features_ = 0;
  uint64_t protocol_features_ = 0;
  uint32_t backend_queues_ = 1;
  std::vector<uint8_t> config_;
  UniqueFd inflight_fd_;
  vhost_user::Inflight inflight_info_;
  uint8_t* inflight_map_ = nullptr;
};

}  // namespace moss::harness
