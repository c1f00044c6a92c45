// The virtio-vsock device (virtio 1.2, 5.10) as a vhost-user DeviceInterface, in hybrid mode:
// the guest's stream sockets are carried to and from host Unix sockets (hybrid.h).
//
// Queues: 0 receive (device -> guest packets), 1 transmit (guest -> device), 2 event. Config
// space: le64 guest_cid. Features: VERSION_1, RING_EVENT_IDX, RING_INDIRECT_DESC (stream
// sockets only: no VIRTIO_VSOCK_F_SEQPACKET).
//
// One VsockDevice serves one frontend connection on the worker runtime, a
// runtime::VirtioDevice (devices/worker/virtio_device.h); everything runs on the worker's
// thread. The base calls process() when a ring was kicked, enabled or started; the device
// watches its host sockets and a 1 s timer (connect time-outs) on the runtime's loop itself;
// the host listener (worker.h) calls connect_from_host() when a host program sent its CONNECT
// line.
//
// State (DEVICE_STATE, state.h): the rings' positions, the driver's features and the guest CID;
// connections are not carried, and a device that loaded a state sends TRANSPORT_RESET like any
// new one.
//
// Guest input is trusted for nothing: transmit chains go through walk_chain and parse_packet;
// a packet that is refused, breaks the protocol or overruns its credit is answered with an RST
// (ConnectionTable). A chain the walker refuses, a ring index that runs away, a receive buffer
// that cannot hold a header or an event buffer that cannot hold an event breaks that queue: it
// stops and its error eventfd is signalled until the driver resets the device.
//
// The receive path takes a buffer only when the table has something for it, and gives it back
// (un-pops it) if the host socket it was for has nothing after all, so no buffer is ever held
// between events. Host data is read straight into the guest's buffer; guest data is written
// straight from the connection's buffer.
//
// The event queue carries VIRTIO_VSOCK_EVENT_TRANSPORT_RESET once per device (so once per
// frontend connection) and again after RESET_DEVICE: a guest that kept connections across a
// backend restart drops them. (QEMU's vhost-user-vsock keeps the event queue to itself and
// never starts ring 2 here; moss's vcpu process hands all three over.)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/event.h"
#include "base/fd.h"
#include "devices/vsock/connection.h"
#include "devices/vsock/packet.h"
#include "devices/vsock/state.h"
#include "devices/worker/virtio_device.h"

namespace moss::vsock {

// Virtio feature bits (virtio 1.2, 5.10.3 and 6).
namespace feature {
using namespace virtio::feature;  // No device bits: stream sockets only.
}  // namespace feature

constexpr uint32_t kMaxQueueSize = 1024;
constexpr size_t kConfigSize = 8;  // struct virtio_vsock_config { le64 guest_cid; }

struct DeviceOptions {
  uint64_t guest_cid = 0;  // kMinGuestCid..kMaxGuestCid.
  std::string uds_path;    // Guest connections to port N go to "<uds_path>_N".
  Limits limits;
  // If set, guest connections to host port N get their host socket from it instead of
  // connecting to "<uds_path>_N" here (moss-vsock --connect-fd: the starter connects).
  std::function<Result<UniqueFd>(uint32_t port)> connect_host;
};

// Monotonic milliseconds (connection time-outs).
uint64_t monotonic_ms();

struct DeviceCounters {
  uint64_t packets_from_guest = 0;
  uint64_t packets_to_guest = 0;
  uint64_t transport_resets = 0;  // TRANSPORT_RESET events delivered.
};

class VsockDevice final : public runtime::VirtioDevice {
 public:
  // `loop`: where the device watches its host sockets and its timer.
  VsockDevice(DeviceOptions options, event_base* loop);
  // Closes every host socket (the guest's side of them is gone with its frontend).
  ~VsockDevice() override;
  VsockDevice(const VsockDevice&) = delete;
  VsockDevice& operator=(const VsockDevice&) = delete;

  // runtime::Device.
  runtime::Stats stats() const override;

  void on_host_event(int fd, bool readable, bool writable);
  // A host program asked for guest port `port` on `sock` (a connected, non-blocking stream
  // socket whose CONNECT line has been read). Error (and `sock` closed) at the connection limit.
  Result<void> connect_from_host(UniqueFd sock, uint32_t port);
  void on_timer();

  const ConnectionTable& table() const { return table_; }
  const DeviceCounters& counters() const { return counters_; }

 private:
  // runtime::VirtioDevice.
  void process(uint32_t q) override;
  // The driver starts over, or a state was loaded: the guest's connections are gone, so ours go
  // too (silently), and the guest hears TRANSPORT_RESET.
  void driver_reset() override { forget_connections(); }
  void state_loaded() override { forget_connections(); }
  // SavedState: the common part and the guest CID.
  Result<std::vector<uint8_t>> write_state(const virtio::CommonState& common) const override;
  Result<virtio::CommonState> read_state(std::span<const uint8_t> bytes) const override;

  struct HostSocket {
    UniqueFd fd;
    bool watch_read = false;
    bool watch_write = false;
    bool write_blocked = false;  // The last write hit EAGAIN: wait for writable.
    bool shut_read = false;
    bool shut_write = false;
  };

  struct RxBuffer {
    uint16_t head = 0;
    virtio::DescriptorChain chain;
    uint32_t room = 0;  // Payload bytes after the header.
  };
  enum class Take { kOk, kNone, kBroken };

  void forget_connections();
  void watch(int fd, bool read, bool write);
  void process_tx();
  void fill_rx();
  // The next receive buffer, checked. kNone: the ring is empty (with ask_for_kick, the driver
  // is asked to kick when it adds one). kBroken: the queue was just broken.
  Take take_rx_buffer(RxBuffer& out, bool ask_for_kick);
  void give_back_rx(size_t n);
  void finish_rx(const RxBuffer& b, const PacketHeader& h, uint32_t payload);
  // Reads a kData item's socket into `first` and, within the guest's credit, more buffers;
  // returns how many buffers became packets (at most `budget`), 0 if nothing was read.
  size_t read_into_rx(RxBuffer& first, const RxItem& item, size_t budget);
  void send_events();
  // Drains the table's actions (connect, sync, close), including those they cause.
  void run_actions();
  void connect_to_host(ConnKey key, uint32_t port);
  void sync(ConnKey key);
  void flush(ConnKey key, HostSocket& s);
  void close_socket(ConnKey key);
  // All the work an event can have caused: actions, receive buffers, interrupts.
  void settle();

  const DeviceOptions options_;
  event_base* loop_;
  ConnectionTable table_;
  std::map<ConnKey, HostSocket> sockets_;
  std::map<int, ConnKey> by_fd_;
  bool reset_event_pending_ = true;
  DeviceCounters counters_;
  std::map<int, Event> host_events_;  // Host sockets watched, by fd.
  Event timer_;
};

}  // namespace moss::vsock
