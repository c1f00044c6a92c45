// The frontend side of vhost-user: a blocking client over a connected Unix stream socket.
//
// Each call sends one request and, when the request has a reply (or REPLY_ACK was
// negotiated, in which case the request carries NEED_REPLY), waits for it. Replies go
// through the same decoder as requests, and must answer the request just sent. A backend
// that sends garbage, refuses a request or closes the socket yields an Error; the caller
// should then drop the connection, as the spec asks.
//
// Not thread-safe: one request in flight at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "vhost-user/message.h"
#include "vhost-user/socket.h"

namespace moss::vhost_user {

// The handshake every frontend does, as three steps a caller may stop between or replace by
// hand (a hostile test does the usual steps and attacks one): negotiate(), set_mem_table(),
// start_ring() per queue. What to ask for:
struct Negotiation {
  uint64_t features = ~uint64_t{0};           // Device feature bits to accept when offered.
  uint64_t protocol_features = ~uint64_t{0};  // Protocol features to accept when offered.
  // False: a frontend that ignores protocol features (no GET/SET_PROTOCOL_FEATURES, bit 30
  // not acked), so rings start enabled.
  bool use_protocol_features = true;
};
// What the backend offered and what was agreed.
struct Negotiated {
  uint64_t offered_features = 0;   // GET_FEATURES, bit 30 included.
  uint64_t acked_features = 0;     // Sent with SET_FEATURES, without bit 30.
  uint64_t protocol_features = 0;  // Sent with SET_PROTOCOL_FEATURES (0 if not negotiated).
  uint32_t queues = 1;             // GET_QUEUE_NUM with MQ, else 1.
  bool has(int feature) const { return (acked_features >> feature) & 1; }
  bool has_protocol(int feature) const { return (protocol_features >> feature) & 1; }
};
// One ring, as SET_VRING_NUM/BASE/ADDR/CALL/ERR/KICK/ENABLE give it. Addresses are the
// frontend's (user) addresses. A step whose fd is nullopt is left out: without `kick` the
// ring is configured but not started, for a caller that sends its own kick fd.
struct RingSetup {
  uint32_t index = 0;
  uint32_t size = 0;
  std::optional<uint32_t> base = 0;  // Nullopt: no SET_VRING_BASE (the backend's default, 0).
  uint64_t desc = 0, avail = 0, used = 0;
  std::optional<int> call, err, kick;
  bool enable = false;  // SET_VRING_ENABLE(1) after the kick (needs protocol features).
};

class Frontend {
 public:
  explicit Frontend(UniqueFd sock) : sock_(std::move(sock)) {}
  // Connects to a backend listening on `path`.
  static Result<Frontend> connect(const std::string& path);

  int fd() const { return sock_.get(); }
  // Every later send and reply waits at most `timeout` (SO_SNDTIMEO, SO_RCVTIMEO), so a
  // wedged backend is an Error rather than a hang.
  Result<void> set_timeout(std::chrono::milliseconds timeout);
  bool reply_ack() const { return reply_ack_; }

  Result<uint64_t> get_features();
  Result<void> set_features(uint64_t features);
  Result<void> set_owner();
  Result<uint64_t> get_protocol_features();
  // Enabling REPLY_ACK here makes every later request without a reply body carry NEED_REPLY.
  Result<void> set_protocol_features(uint64_t features);
  Result<uint64_t> get_queue_num();

  // GET_FEATURES; GET_PROTOCOL_FEATURES and SET_PROTOCOL_FEATURES (when bit 30 is offered
  // and wanted); GET_QUEUE_NUM (with MQ); SET_OWNER; SET_FEATURES with what was offered and
  // wanted (plus bit 30 when protocol features were negotiated). QEMU's order.
  Result<Negotiated> negotiate(const Negotiation& want = {});
  // SET_VRING_NUM, BASE, ADDR, CALL, ERR, KICK (the backend starts the ring), ENABLE: call
  // and err go before the kick, since a backend may run the ring as soon as it has the kick.
  Result<void> start_ring(const RingSetup& ring);

  // `fds[i]` backs `regions[i]`; both at most 8 long.
  Result<void> set_mem_table(std::span<const MemoryRegion> regions, std::span<const int> fds);
  // One region backed by `fd` (guest RAM in one memfd).
  Result<void> set_mem_table(const MemoryRegion& region, int fd) {
    return set_mem_table(std::span<const MemoryRegion>(&region, 1), std::span<const int>(&fd, 1));
  }
  Result<uint64_t> get_max_mem_slots();
  Result<void> add_mem_reg(const MemoryRegion& region, int fd);
  Result<void> rem_mem_reg(const MemoryRegion& region);

  Result<void> set_vring_num(uint32_t index, uint32_t num);
  Result<void> set_vring_addr(const VringAddr& addr);
  Result<void> set_vring_base(uint32_t index, uint32_t base);
  // Stops the ring; returns the next available-ring index the backend would have processed.
  Result<uint32_t> get_vring_base(uint32_t index);
  // fd -1 sends the "no fd" flag.
  Result<void> set_vring_kick(uint32_t index, int fd);
  Result<void> set_vring_call(uint32_t index, int fd);
  Result<void> set_vring_err(uint32_t index, int fd);
  Result<void> set_vring_enable(uint32_t index, bool enable);

  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size, uint32_t flags = 0);
  Result<void> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags = 0);
  Result<void> reset_device();

  struct InflightFd {
    Inflight info;  // mmap_size and mmap_offset as the backend chose them.
    UniqueFd fd;
  };
  Result<InflightFd> get_inflight_fd(uint16_t num_queues, uint16_t queue_size);
  Result<void> set_inflight_fd(const Inflight& info, int fd);

  // Hands the backend one end of the state channel (kTransferSave: it writes; kTransferLoad:
  // it reads). Returns the backend's own channel fd if it chose to provide one (then use it
  // instead), or an invalid UniqueFd.
  Result<UniqueFd> set_device_state_fd(uint32_t direction, int fd);
  // After the channel hit EOF (save) or was closed by us (load): did the backend succeed?
  Result<void> check_device_state();

 private:
  // A request answered only by REPLY_ACK, if negotiated.
  Result<void> command(Message m, std::span<const int> fds = {});
  // A request with a reply body.
  Result<Received> transact(const Message& m, std::span<const int> fds = {});
  Result<Received> receive_reply(Request r);
  Result<uint64_t> get_u64(Request r);
  Result<void> set_vring_fd(Request r, uint32_t index, int fd);

  UniqueFd sock_;
  bool reply_ack_ = false;
};

}  // namespace moss::vhost_user
