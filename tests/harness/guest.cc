#include "tests/harness/guest.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/syscall.h"

namespace moss::harness {
namespace {

using namespace vhost_user::protocol_feature;
using vhost_user::bit;

// The spec's split-ring inflight region: {u64 features, u16 version, u16 desc_num,
// u16 last_batch_head, u16 used_idx} then desc_num 16-byte DescStateSplit, whose first byte
// is the `inflight` flag.
constexpr uint64_t kInflightHeader = 16;
constexpr uint64_t kInflightDesc = 16;

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

Result<UniqueFd> make_eventfd() {
  MOSS_TRY(int fd, MOSS_SYS(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
  return UniqueFd(fd);
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

// ---- GuestRam ----

GuestRam::GuestRam(UniqueFd fd, uint8_t* host, uint64_t size)
    : fd_(std::move(fd)), host_(host), size_(size), memory_({GuestRegion{0, size, host}}) {}

GuestRam::~GuestRam() { ::munmap(host_, size_); }

Result<std::unique_ptr<GuestRam>> GuestRam::create(uint64_t bytes) {
  MOSS_TRY(int raw, MOSS_SYS(::memfd_create("moss-harness-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
  UniqueFd fd(raw);
  MOSS_TRY_VOID(MOSS_SYS(::ftruncate(fd.get(), static_cast<off_t>(bytes))));
  // The backend maps this file: sealing its size means no one can make its mapping fault
  // (vhost-user/README.md, "Not supported").
  MOSS_TRY_VOID(MOSS_SYS(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)));
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return make_error("cannot map " + std::to_string(bytes) + " bytes of guest RAM", errno);
  return std::unique_ptr<GuestRam>(new GuestRam(std::move(fd), static_cast<uint8_t*>(p), bytes));
}

Result<uint64_t> GuestRam::alloc(uint64_t bytes, uint64_t align) {
  uint64_t at = align_up(next_, align);
  if (at > size_ || bytes > size_ - at) {
    return make_error("guest RAM of " + std::to_string(size_) + " bytes has no room for " +
                      std::to_string(bytes) + " more: give the guest more memory");
  }
  next_ = at + bytes;
  std::memset(host_ + at, 0, bytes);
  return at;
}

std::span<uint8_t> GuestRam::bytes(uint64_t gpa, uint64_t len) const {
  MOSS_ASSERT(gpa <= size_ && len <= size_ - gpa);
  return {host_ + gpa, len};
}

// ---- Guest ----

Guest::Guest(std::unique_ptr<GuestRam> ram, const GuestOptions& options)
    : ram_(std::move(ram)), options_(options) {}

Guest::~Guest() {
  frontend_.reset();  // Close the socket first: the backend stops using our memory.
  if (inflight_map_ != nullptr) ::munmap(inflight_map_, inflight_info_.mmap_size);
}

Result<std::unique_ptr<Guest>> Guest::create(const GuestOptions& options) {
  if (options.num_queues == 0 || options.queue_size == 0 || (options.queue_size & (options.queue_size - 1)) != 0) {
    return make_error("the harness needs at least one queue and a power-of-two queue size");
  }
  MOSS_TRY(auto ram, GuestRam::create(options.memory_bytes));
  std::unique_ptr<Guest> g(new Guest(std::move(ram), options));
  g->queues_.resize(options.num_queues);
  for (auto& q : g->queues_) {
    MOSS_TRY(q.ring_gpa, g->ram_->alloc(virtio::DriverQueue::footprint(options.queue_size), 4096));
    MOSS_TRY(q.kick, make_eventfd());
    MOSS_TRY(q.call, make_eventfd());
    MOSS_TRY(q.err, make_eventfd());
  }
  return g;
}

Result<std::unique_ptr<Guest>> Guest::connect(const std::string& socket_path, const GuestOptions& options) {
  MOSS_TRY(auto g, create(options));
  MOSS_TRY_VOID(g->open_socket(socket_path));
  MOSS_TRY_VOID(g->handshake(false));
  return g;
}

Result<std::unique_ptr<Guest>> Guest::adopt(UniqueFd socket, const GuestOptions& options) {
  MOSS_TRY(auto g, create(options));
  MOSS_TRY_VOID(g->use_socket(std::move(socket)));
  MOSS_TRY_VOID(g->handshake(false));
  return g;
}

Result<void> Guest::use_socket(UniqueFd sock) {
  frontend_.emplace(std::move(sock));
  return frontend_->set_timeout(options_.timeout);
}

Result<void> Guest::open_socket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error("socket path " + path + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
  for (;;) {
    MOSS_TRY(int raw, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    UniqueFd sock(raw);
    if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      return use_socket(std::move(sock));
    }
    int e = errno;
    // Not there yet, or bound but not listening yet: a backend that is still starting.
    bool starting = e == ENOENT || e == ECONNREFUSED || e == EAGAIN || e == EINTR;
    if (!starting || std::chrono::steady_clock::now() >= deadline) {
      return sys_error_code(e, "connect to the vhost-user backend at", path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

vhost_user::Frontend& Guest::frontend() {
  MOSS_ASSERT(frontend_.has_value());
  return *frontend_;
}

Result<void> Guest::handshake(bool reconnecting, std::optional<std::span<const uint8_t>> state) {
  vhost_user::Frontend& fe = *frontend_;
  vhost_user::Negotiation want;
  want.features = options_.device_features | (1ull << feature::kVersion1);
  if (options_.event_idx) want.features |= 1ull << feature::kEventIdx;
  if (options_.indirect) want.features |= 1ull << feature::kIndirectDesc;
  want.protocol_features = bit(kMq) | bit(kReplyAck) | bit(kConfig) | bit(kResetDevice) | bit(kDeviceState);
  if (options_.inflight) want.protocol_features |= bit(kInflightShmfd);
  MOSS_TRY(vhost_user::Negotiated n, fe.negotiate(want));
  offered_features_ = n.offered_features;
  acked_features_ = n.acked_features;
  protocol_features_ = n.protocol_features;
  backend_queues_ = n.queues;
  if (!n.has(feature::kVersion1)) {
    return make_error("the backend does not offer VIRTIO_F_VERSION_1 (legacy devices are not supported)");
  }
  if (queues_.size() > backend_queues_) {
    return make_error("the backend serves " + std::to_string(backend_queues_) + " queue(s), the test asked for " +
                      std::to_string(queues_.size()));
  }
  if (n.has_protocol(kConfig)) {
    MOSS_TRY(config_, fe.get_config(0, options_.config_bytes));
  }

  if (n.has_protocol(kInflightShmfd)) {
    if (!reconnecting) {
      MOSS_TRY(auto in, fe.get_inflight_fd(static_cast<uint16_t>(queues_.size()), options_.queue_size));
      void* p = ::mmap(nullptr, in.info.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, in.fd.get(),
                       static_cast<off_t>(in.info.mmap_offset));
      if (p == MAP_FAILED) return make_error("cannot map the backend's inflight buffer", errno);
      inflight_map_ = static_cast<uint8_t*>(p);
      inflight_info_ = in.info;
      inflight_fd_ = std::move(in.fd);
    }
    MOSS_TRY_VOID(fe.set_inflight_fd(inflight_info_, inflight_fd_.get()));
  } else if (reconnecting && !state) {
    return make_error("the backend no longer offers INFLIGHT_SHMFD, so requests in flight cannot be resubmitted");
  }

  MOSS_TRY_VOID(fe.set_mem_table(vhost_user::MemoryRegion{0, ram_->size(), reinterpret_cast<uint64_t>(ram_->host()), 0}, ram_->fd()));
  if (state) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return make_error("cannot make the state pipe", errno);
    UniqueFd rd(p[0]), wr(p[1]);
    MOSS_TRY(UniqueFd theirs, fe.set_device_state_fd(vhost_user::kTransferLoad, rd.get()));
    rd.reset();
    int out = theirs.valid() ? theirs.get() : wr.get();
    for (size_t off = 0; off < state->size();) {
      ssize_t w = ::write(out, state->data() + off, state->size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return make_error("cannot write the device state to the backend", errno);
      off += static_cast<size_t>(w);
    }
    wr.reset();
    theirs.reset();
    MOSS_TRY_VOID(fe.check_device_state());
  }

  for (uint32_t i = 0; i < queues_.size(); ++i) {
    Queue& q = queues_[i];
    if (!reconnecting) {
      MOSS_TRY(auto d, virtio::DriverQueue::create(ram_->memory(), q.ring_gpa, options_.queue_size,
                                                    has_feature(feature::kEventIdx),
                                                    has_feature(feature::kIndirectDesc)));
      q.driver.emplace(std::move(d));
      MOSS_TRY_VOID(start_queue(i, 0));
    } else {
      // What QEMU does when its backend went away (virtio_queue_restore_last_avail_idx): the
      // base is the used index; the backend's inflight tracking covers what lies beyond it.
      auto used = ram_->memory().read_obj<uint16_t>(q.driver->config().used_gpa + virtio::kRingIdxOffset);
      MOSS_ASSERT(used.ok());
      MOSS_TRY_VOID(start_queue(i, *used));
    }
  }
  // Enabled once all are started, as QEMU does.
  if (offered_features_ & bit(vhost_user::kFeatureProtocolFeatures)) {
    for (uint32_t i = 0; i < queues_.size(); ++i) MOSS_TRY_VOID(fe.set_vring_enable(i, true));
  }
  return {};
}

Result<void> Guest::start_queue(uint32_t index, uint16_t base) {
  Queue& q = queues_[index];
  const virtio::QueueConfig& c = q.driver->config();
  auto user = [&](uint64_t gpa) { return reinterpret_cast<uint64_t>(ram_->host() + gpa); };
  vhost_user::RingSetup r;
  r.index = index;
  r.size = c.size;
  r.base = base;
  r.desc = user(c.desc_gpa);
  r.avail = user(c.avail_gpa);
  r.used = user(c.used_gpa);
  r.call = q.call.get();
  r.err = q.err.get();
  r.kick = q.kick.get();
  return frontend_->start_ring(r);
}

virtio::DriverQueue& Guest::queue(uint32_t index) {
  MOSS_ASSERT(index < queues_.size() && queues_[index].driver.has_value());
  return *queues_[index].driver;
}

Result<void> Guest::kick(uint32_t index) {
  MOSS_ASSERT(index < queues_.size());
  uint64_t one = 1;
  MOSS_TRY_VOID(MOSS_SYS(::write(queues_[index].kick.get(), &one, sizeof one)));
  return {};
}

Result<void> Guest::kick_if_needed(uint32_t index) {
  if (!queue(index).kick_needed()) return {};
  return kick(index);
}

Result<void> Guest::wait_call(uint32_t index, std::chrono::steady_clock::time_point deadline) {
  MOSS_ASSERT(index < queues_.size());
  Queue& q = queues_[index];
  for (;;) {
    pollfd fds[3] = {{q.call.get(), POLLIN, 0}, {q.err.get(), POLLIN, 0}, {-1, POLLIN | POLLRDHUP, 0}};
    // We never ask for the backend-initiated channel, so the socket turns readable only when
    // the backend closes it (or misbehaves, which ends the connection too).
    if (frontend_) fds[2].fd = frontend_->fd();
    MOSS_TRY(int n, MOSS_SYS(::poll(fds, 3, remaining_ms(deadline))));
    if (n == 0) return make_error("the backend did not complete a request in time", kErrTimedOut);
    uint64_t count;
    // Reads reset the eventfds; they are non-blocking, and a lost race to 0 is harmless.
    if (fds[1].revents & POLLIN) {
      if (::read(q.err.get(), &count, sizeof count) < 0) count = 0;
      return make_error("the backend signalled an error on queue " + std::to_string(index), kErrRingError);
    }
    if (fds[0].revents & POLLIN) {
      if (::read(q.call.get(), &count, sizeof count) < 0) count = 0;
      return {};
    }
    if (fds[2].revents != 0) return make_error("the backend closed the vhost-user connection", kErrDisconnected);
  }
}

void Guest::disconnect() { frontend_.reset(); }

Result<void> Guest::reconnect(const std::string& socket_path) {
  if (!inflight_fd_.valid()) {
    return make_error("reconnecting needs the inflight buffer, which this backend did not offer");
  }
  frontend_.reset();
  MOSS_TRY_VOID(open_socket(socket_path));
  return handshake(true);
}

Result<void> Guest::restore(const std::string& socket_path, std::span<const uint8_t> state) {
  frontend_.reset();
  MOSS_TRY_VOID(open_socket(socket_path));
  return handshake(true, state);
}

Result<std::vector<uint8_t>> Guest::save_state() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return make_error("cannot make the state pipe", errno);
  UniqueFd rd(p[0]), wr(p[1]);
  MOSS_TRY(UniqueFd theirs, frontend().set_device_state_fd(vhost_user::kTransferSave, wr.get()));
  wr.reset();
  int in = theirs.valid() ? theirs.get() : rd.get();
  std::vector<uint8_t> blob;
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error("cannot read the device state", errno);
    if (n == 0) break;
    blob.insert(blob.end(), buf, buf + n);
  }
  MOSS_TRY_VOID(frontend().check_device_state());
  return blob;
}

Result<uint32_t> Guest::stop_queue(uint32_t index) { return frontend().get_vring_base(index); }

Result<void> Guest::sync() {
  for (int i = 0; i < 2; ++i) MOSS_TRY_VOID(frontend().get_features());
  return {};
}

std::optional<InflightQueue> Guest::inflight(uint32_t index) const {
  if (inflight_map_ == nullptr || index >= inflight_info_.num_queues) return std::nullopt;
  uint64_t stride = inflight_info_.mmap_size / inflight_info_.num_queues;
  const uint8_t* r = inflight_map_ + stride * index;
  InflightQueue out;
  std::memcpy(&out.version, r + 8, 2);
  std::memcpy(&out.desc_num, r + 10, 2);
  std::memcpy(&out.used_idx, r + 14, 2);
  uint64_t n = std::min<uint64_t>(out.desc_num, (stride - kInflightHeader) / kInflightDesc);
  for (uint64_t i = 0; i < n; ++i) out.in_flight += r[kInflightHeader + i * kInflightDesc] == 1;
  return out;
}

}  // namespace moss::harness
