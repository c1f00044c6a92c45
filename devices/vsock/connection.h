// The stream connections of one guest, as a pure state machine: no sockets, no clock, no
// guest memory. The device feeds it what the guest sent (parsed packets) and what happened on
// the host side (a host program's CONNECT, a socket that turned readable, hit EOF, failed,
// took bytes); the table answers with packets for the guest's receive queue (next_rx) and
// actions for the host side (take_actions: connect, sync, close).
//
// A connection is keyed by (guest port, host port): the host port is the guest's destination
// port for guest-initiated connections, or one the table picks (from 2^30 up) for those a host
// program asked for.
//
// Flow control (virtio 1.2, 5.10.6.3), both ways:
//   - Guest -> host: we grant `buf_alloc` bytes per connection and count what we received
//     (rx_cnt) and wrote to the host socket (fwd_cnt). Bytes not yet written wait in the
//     connection's buffer, which the credit bounds: a guest that sends more than the credit it
//     was last told (buf_alloc - (rx_cnt - the fwd_cnt in our last packet)) is reset. Every
//     packet we send carries fwd_cnt; a CREDIT_UPDATE goes out on CREDIT_REQUEST, when a
//     quarter of the buffer has been written since the guest was last told, or when the guest
//     believes it has less than a quarter left.
//   - Host -> guest: the guest grants buf_alloc/fwd_cnt in every packet; we never offer a data
//     packet larger than peer_buf_alloc - (tx_cnt - peer_fwd_cnt), and send a CREDIT_REQUEST
//     when the host has data but that credit is 0. A guest fwd_cnt that claims more than we
//     sent resets the connection.
//
// Shutdown: a guest SHUTDOWN(RCV) stops reading the host socket (shut_read); SHUTDOWN(SEND)
// shuts the host socket's write side once everything the guest sent is written. Host EOF sends
// SHUTDOWN(SEND) (and RCV when the host closed both ways). When nothing can flow either way any
// more, the connection ends with an RST to the guest (as Linux's own transport does) and a
// close of the host socket. An RST from the guest closes the host socket at once.
//
// Memory is bounded: at most max_connections connections, each buffering at most buf_alloc
// bytes (plus the few bytes of an "OK" line), and at most max_queued_resets RSTs owed to the
// guest for packets without a connection (more are dropped; the guest's own timeouts cover
// them).
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/vsock/packet.h"

namespace moss::vsock {

struct ConnKey {
  uint32_t guest_port = 0;
  uint32_t host_port = 0;
  auto operator<=>(const ConnKey&) const = default;
};
std::string describe(ConnKey key);  // "guest port 1024 <-> host port 5000"

// The first host port handed to host-initiated connections (Firecracker's choice too: far
// above the ports host services listen on).
inline constexpr uint32_t kFirstHostPort = 1u << 30;

struct Limits {
  uint32_t buf_alloc = 256 * 1024;  // Credit granted per connection; bounds its buffer.
  uint32_t max_connections = 256;
  uint32_t max_queued_resets = 256;
  uint64_t connect_timeout_ms = 5000;  // For the guest to answer a host program's REQUEST.
};

// A bounded FIFO of bytes, allocated on first use and released with the connection.
class ByteRing {
 public:
  explicit ByteRing(size_t capacity) : cap_(capacity) {}
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  bool empty() const { return size_ == 0; }
  size_t allocated() const { return buf_.size(); }
  // The caller checked that it fits (an assertion otherwise).
  void push(std::span<const uint8_t> bytes);
  // The bytes in order, as at most two pieces (the second is empty unless they wrap).
  std::array<std::span<const uint8_t>, 2> peek() const;
  void pop(size_t n);

 private:
  std::vector<uint8_t> buf_;
  size_t cap_;
  size_t head_ = 0;
  size_t size_ = 0;
};

enum class ConnState : uint8_t {
  kConnectingToHost,   // The guest sent REQUEST; the device connects to <uds>_<port> now.
  kConnectingToGuest,  // A host program sent CONNECT; our REQUEST waits for the guest's answer.
  kEstablished,
};

// Control packets a connection owes the guest.
namespace pending {
constexpr uint8_t kRequest = 1;
constexpr uint8_t kResponse = 2;
constexpr uint8_t kShutdown = 4;
constexpr uint8_t kCreditUpdate = 8;
constexpr uint8_t kCreditRequest = 16;
}  // namespace pending

struct Connection {
  Connection(ConnKey k, ConnState s, size_t buffer) : key(k), state(s), to_host(buffer) {}
  ConnKey key;
  ConnState state;
  uint64_t deadline_ms = 0;  // kConnectingToGuest: reset if the guest has not answered by then.

  // Guest -> host.
  uint32_t rx_cnt = 0;        // Payload bytes received from the guest.
  uint32_t fwd_cnt = 0;       // Of those, bytes written to the host socket.
  uint32_t told_fwd_cnt = 0;  // fwd_cnt in the last packet we gave the guest.
  ByteRing to_host;           // Received and not yet written.
  uint32_t prefix = 0;        // Bytes at the front of to_host that are ours (the "OK" line).
  bool guest_shut_send = false;
  bool guest_shut_rcv = false;

  // Host -> guest.
  uint32_t tx_cnt = 0;  // Payload bytes sent to the guest.
  uint32_t peer_buf_alloc = 0;
  uint32_t peer_fwd_cnt = 0;
  bool host_readable = false;  // The socket may have data (cleared when a read would block).
  bool host_eof = false;       // The host program sends no more.
  bool credit_requested = false;

  uint8_t pending = 0;          // pending::* bits.
  uint32_t shutdown_flags = 0;  // For pending::kShutdown.
  bool queued = false;          // In the table's ready queue.

  // Bytes the guest will still take: never negative, whatever the guest claimed.
  uint32_t peer_credit() const;
};

// What the device should do with a connection's host socket.
struct HostAction {
  enum class Kind : uint8_t {
    kConnect,  // Connect to the host socket for guest destination `port`; answer with host_connect_result().
    kSync,     // Write what to_host() holds and apply host_side() (read interest, shutdowns).
    kClose,    // Close the socket; the table has forgotten the connection.
  };
  Kind kind;
  ConnKey key;
  uint32_t port = 0;
};

struct HostSide {
  bool read = false;        // Wants to hear when the socket turns readable.
  bool shut_read = false;   // The guest takes no more: shutdown(SHUT_RD).
  bool shut_write = false;  // The guest sends no more and all it sent is written: shutdown(SHUT_WR).
};

// The next thing for the guest's receive queue.
struct RxItem {
  enum class Kind : uint8_t {
    kPacket,  // Write `header` (len 0) into a receive buffer.
    kData,    // Read at most max_bytes from key's host socket into a buffer after the header,
              // then call host_data (bytes read), host_eof, host_would_block or host_failed.
  };
  Kind kind = Kind::kPacket;
  PacketHeader header;
  ConnKey key;
  uint32_t max_bytes = 0;
};

struct TableCounters {
  uint64_t connections = 0;         // Established, either way.
  uint64_t refused_connections = 0; // Guest REQUESTs refused (no host listener, or the limit).
  uint64_t resets_sent = 0;
  uint64_t resets_dropped = 0;      // Owed RSTs dropped because max_queued_resets were waiting.
  uint64_t refused_packets = 0;     // Packets the parser refused.
  uint64_t protocol_violations = 0; // Credit violations, data after SHUTDOWN, bad fwd_cnt, bad ops.
  uint64_t bytes_to_host = 0;
  uint64_t bytes_to_guest = 0;
};

class ConnectionTable {
 public:
  explicit ConnectionTable(uint64_t guest_cid, Limits limits = {});

  // ---- What the guest sent ----
  // A packet that parsed. Every kConnect action it produces must be answered with
  // host_connect_result() before the next call.
  void on_packet(const Packet& p, uint64_t now_ms);
  // A packet the parser refused: answered with an RST (unless it is one), and the connection
  // with its ports, if any, is closed.
  void on_refused(const Rejection& r);

  // ---- What happened on the host side ----
  // A host program asked for guest port `guest_port`: a new connection whose REQUEST goes to
  // the guest. Error when max_connections are open.
  Result<ConnKey> host_connect(uint32_t guest_port, uint64_t now_ms);
  void host_connect_result(ConnKey key, bool connected);
  void host_readable(ConnKey key);
  // `n` (1..max_bytes of the kData item) bytes were read into the receive buffer: the header
  // to write before them.
  PacketHeader host_data(ConnKey key, uint32_t n);
  // How many bytes the device may read for `key` this turn, over one or more receive buffers
  // (host_data once per buffer): the guest's credit, at most kMaxPayload; 0 if it wants none.
  uint32_t data_budget(ConnKey key) const;
  void host_would_block(ConnKey key);
  // The host program sends no more; `peer_closed`: it closed both ways.
  void host_eof(ConnKey key, bool peer_closed);
  // Reading or writing the socket failed: the guest gets an RST.
  void host_failed(ConnKey key);
  std::array<std::span<const uint8_t>, 2> to_host(ConnKey key) const;
  void host_written(ConnKey key, size_t n);
  HostSide host_side(ConnKey key) const;
  // Resets host-initiated connections the guest has not answered in time.
  void expire(uint64_t now_ms);
  // Forgets every connection without telling the guest (it reset its device or went away):
  // a kClose for each.
  void clear();

  // ---- For the guest's receive queue ----
  bool has_rx_work() const { return !resets_.empty() || !ready_.empty(); }
  // `room`: payload bytes the receive buffer holds after the header.
  std::optional<RxItem> next_rx(uint32_t room);

  std::vector<HostAction> take_actions() { return std::exchange(actions_, {}); }

  size_t size() const { return conns_.size(); }
  const Connection* find(ConnKey key) const;
  const TableCounters& counters() const { return counters_; }
  const Limits& limits() const { return limits_; }
  uint64_t guest_cid() const { return guest_cid_; }
  size_t queued_resets() const { return resets_.size(); }

 private:
  Connection* get(ConnKey key);
  Connection& must_get(ConnKey key);
  void guest_request(ConnKey key, const PacketHeader& h);
  void on_rw(Connection& c, const Packet& p);
  void on_shutdown(Connection& c, uint32_t flags);
  bool take_credit(Connection& c, const PacketHeader& h);
  PacketHeader header_for(Connection& c, Op op, uint32_t len = 0, uint32_t flags = 0);
  PacketHeader reset_header(ConnKey key) const;
  std::optional<RxItem> take(Connection& c, uint32_t room);
  bool wants_data(const Connection& c) const;
  void touch(Connection& c);
  bool maybe_finish(Connection& c);
  void queue_reset(ConnKey key);
  void violation(Connection& c);
  void reset(Connection& c);  // RST to the guest, close the host side, forget.
  void close(Connection& c);  // Close the host side and forget, without telling the guest.

  const uint64_t guest_cid_;
  const Limits limits_;
  std::map<ConnKey, Connection> conns_;
  std::deque<ConnKey> ready_;   // Connections with something for the guest, each once.
  std::deque<ConnKey> resets_;  // RSTs for packets that have no connection.
  std::vector<HostAction> actions_;
  uint32_t next_host_port_ = kFirstHostPort;
  bool connecting_ = false;  // A kConnect awaits host_connect_result().
  TableCounters counters_;
};

}  // namespace moss::vsock
