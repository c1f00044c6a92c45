// The backend side of vhost-user, independent of transport and event loop.
//
// A Backend owns the protocol state of one frontend connection: negotiated features, the
// shared guest memory, and per-vring configuration. It handles one decoded message per call
// and tells the caller, through a watch callback, which kick eventfds to poll; it never
// blocks on anything but the device's own callbacks. The device plugs in as a
// DeviceInterface.
//
// Typical loop (one thread):
//   Backend backend(device, [&](int fd, uint32_t q, bool add) { loop.watch(fd, q, add); });
//   when the socket is readable:  if (!backend.serve_one(sock)) disconnect;
//   when kick fd of queue q is readable:  device processes queue q.
//
// Errors in what the frontend sent are Error values. With REPLY_ACK, a request that fails
// is answered with a non-zero status and the connection can go on; otherwise the failure is
// returned and the caller should disconnect (the spec's only other way to signal it).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "base/fd.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "vhost-user/memory.h"
#include "vhost-user/message.h"

namespace moss::vhost_user {

// One virtqueue as the frontend configured it. Ring addresses are already translated from
// frontend user addresses to guest physical addresses, and checked to lie in guest memory
// when the ring starts. Only split rings are supported.
struct Vring {
  uint32_t num = 0;         // Queue size; 0 until SET_VRING_NUM.
  uint16_t base = 0;        // Next available-ring index to process (SET_VRING_BASE).
  uint64_t desc_gpa = 0;
  uint64_t avail_gpa = 0;
  uint64_t used_gpa = 0;
  bool addr_set = false;
  UniqueFd kick;            // Readable when the driver added buffers.
  UniqueFd call;            // Write 1 (8 bytes) to interrupt the driver; may be invalid.
  UniqueFd err;             // Write 1 to report a ring error; may be invalid.
  bool enabled = false;     // Started but disabled rings are processed without side effects.
  bool started = false;
};

// What a device implements. All calls happen on the thread that calls Backend::handle.
class DeviceInterface {
 public:
  virtual ~DeviceInterface() = default;

  // Virtio feature bits the device offers (the Backend adds VHOST_USER_F_PROTOCOL_FEATURES).
  virtual uint64_t features() const = 0;
  // Optional protocol features the device supports, from {CONFIG, INFLIGHT_SHMFD,
  // DEVICE_STATE}; the Backend always offers MQ, REPLY_ACK, RESET_DEVICE and
  // CONFIGURE_MEM_SLOTS itself.
  virtual uint64_t protocol_features() const = 0;
  virtual uint32_t num_queues() const = 0;      // 1..256.
  virtual uint32_t max_queue_size() const = 0;  // A power of two, at most 32768.

  // The features the driver accepted (a subset of features()).
  virtual Result<void> set_features(uint64_t acked) {
    (void)acked;
    return {};
  }
  // Exactly `size` bytes of config space at `offset`, or an Error.
  virtual Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) = 0;
  // flags: 0 for a guest write, 1 for live migration (which may also set read-only fields).
  virtual Result<void> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) = 0;

  // The ring is configured and may be processed from now on; `vring` stays valid until
  // on_queue_stopped. Its call/err fds and `enabled` can change while it runs, so read them
  // when used. An Error leaves the ring stopped and is reported to the frontend.
  virtual Result<void> on_queue_started(uint32_t index, const Vring& vring) = 0;
  // Stop processing the ring, finish (drain) what is in flight, and return the next
  // available-ring index to process (what GET_VRING_BASE reports).
  virtual uint16_t on_queue_stopped(uint32_t index) = 0;
  virtual void on_queue_enabled(uint32_t index, bool enabled) {
    (void)index;
    (void)enabled;
  }
  // Guest memory is about to be remapped while rings run (SET_MEM_TABLE, REM_MEM_REG): drop
  // any host pointer into it and finish I/O that targets it.
  virtual void on_memory_changing() {}
  // RESET_DEVICE: return to the initial state (rings were already stopped).
  virtual void reset() = 0;

  // Device state transfer (DEVICE_STATE), while every ring is stopped. The Backend moves the
  // bytes over the frontend's fd itself, after the reply to SET_DEVICE_STATE_FD, within one
  // deadline for the whole transfer: save_state gives the whole state, load_state takes what
  // the frontend sent (at most max_state_bytes()).
  virtual Result<std::vector<uint8_t>> save_state() { return make_error("this device cannot save its state"); }
  virtual Result<void> load_state(std::span<const uint8_t> bytes) {
    (void)bytes;
    return make_error("this device cannot load a saved state");
  }
  virtual size_t max_state_bytes() const { return 0; }
};

// Called with add=true when the backend starts caring about a kick fd, add=false before it
// closes or stops caring about one.
using WatchFn = std::function<void(int fd, uint32_t queue, bool add)>;

// The result of handling one message.
struct Handled {
  std::optional<Message> reply;  // Send it, with reply_fds attached, if present.
  std::vector<int> reply_fds;    // Owned by the Backend; valid until the next handle().
  std::optional<Error> refused;  // The request failed and the reply tells the frontend so.
};

// The inflight-tracking buffer (INFLIGHT_SHMFD), laid out per the spec's split-ring
// QueueRegionSplit: one region per queue, each inflight_queue_region_size(queue_size) bytes.
struct InflightArea {
  uint8_t* data = nullptr;
  size_t size = 0;
  uint16_t num_queues = 0;
  uint16_t queue_size = 0;
};

// What a frontend may not make a backend wait for longer than.
struct BackendLimits {
  // A whole device-state transfer (SET_DEVICE_STATE_FD), however the frontend paces it.
  std::chrono::milliseconds state_transfer{5000};
};

class Backend {
 public:
  static constexpr uint32_t kMaxMemSlots = 32;

  // `device` must outlive the Backend.
  Backend(DeviceInterface& device, WatchFn watch, BackendLimits limits = {});
  // Stops every running ring (so the device lets go of guest memory) before unmapping it.
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // Handles one request. `fds` are the descriptors that came with it, already matched to the
  // request by decode(); the Backend keeps those it needs and closes the rest.
  Result<Handled> handle(const Message& m, std::vector<UniqueFd> fds);
  // Runs work that must follow the reply (the device-state transfer, which the frontend
  // only services once it has the reply). Call it after sending each reply. An Error (the
  // transfer's channel failed or missed its deadline) means: drop the connection. A state the
  // device refuses is reported by CHECK_DEVICE_STATE instead.
  Result<void> after_reply();
  // Consumes a wake-up of kick fd `fd` (queue `queue`). An Error means the fd does not behave
  // like the eventfd it was checked to be (a read that fails or returns no counter): drop the
  // connection rather than poll it again.
  static Result<void> consume_kick(int fd, uint32_t queue);
  // Receives, handles and answers one message, then runs after_reply(). False on an
  // orderly close by the frontend.
  Result<bool> serve_one(int sock);

  const GuestMemory& memory() const { return memory_.guest_memory(); }
  const Vring& vring(uint32_t index) const { return vrings_.at(index); }
  uint64_t acked_features() const { return acked_features_; }
  uint64_t acked_protocol_features() const { return acked_protocol_; }
  // Empty until GET_INFLIGHT_FD or SET_INFLIGHT_FD.
  InflightArea inflight() const;

  static uint64_t inflight_queue_region_size(uint16_t queue_size);

 private:
  uint64_t offered_features() const;
  uint64_t offered_protocol_features() const;
  bool negotiated(int protocol_bit) const { return acked_protocol_ & bit(protocol_bit); }
  Result<void> require(int protocol_bit, Request r) const;
  Result<Vring*> ring(uint32_t index, Request r);

  Result<void> dispatch(const Message& m, std::vector<UniqueFd>& fds, Handled& out);
  Result<void> set_features(uint64_t v);
  Result<void> set_mem_table(const MemoryTable& t, std::vector<UniqueFd>& fds);
  Result<void> set_vring_num(const VringState& s);
  Result<void> set_vring_addr(const VringAddr& a);
  Result<void> set_vring_fd(Request r, uint64_t v, std::vector<UniqueFd>& fds);
  Result<void> set_vring_enable(const VringState& s);
  Result<void> get_inflight_fd(const Inflight& in, Handled& out);
  Result<void> set_inflight_fd(const Inflight& in, UniqueFd fd);
  Result<void> check_inflight_geometry(const Inflight& in) const;
  Result<void> set_device_state_fd(const DeviceStateTransfer& t, UniqueFd fd);

  Result<void> maybe_start(uint32_t index);
  uint16_t stop(uint32_t index);
  void stop_all();
  bool any_started() const;
  void set_enabled(uint32_t index, bool enabled);
  void reset_device();

  Result<void> transfer(uint32_t direction, int fd, bool& channel_failed);

  DeviceInterface& device_;
  WatchFn watch_;
  BackendLimits limits_;
  std::vector<Vring> vrings_;
  MemoryMap memory_;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_ = 0;
  bool owned_ = false;

  UniqueFd inflight_fd_;  // Kept only to send it in the GET_INFLIGHT_FD reply.
  Mapping inflight_map_;
  uint16_t inflight_queues_ = 0;
  uint16_t inflight_queue_size_ = 0;

  struct Transfer {
    uint32_t direction;
    UniqueFd fd;
  };
  std::optional<Transfer> pending_transfer_;
  std::optional<Result<void>> transfer_result_;  // Empty: no transfer since the last check.
};

}  // namespace moss::vhost_user
