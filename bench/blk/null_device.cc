#include "bench/blk/null_device.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "devices/blk/request.h"
#include "devices/virtio/queue.h"
#include "vhost-user/backend.h"

namespace moss::bench {
namespace {

using vhost_user::bit;

// Virtio feature bits (virtio 1.2, 5.2.3 and 6).
constexpr int kSegMax = 2;
constexpr int kBlkSize = 6;
constexpr int kFlush = 9;
constexpr int kIndirectDesc = 28;
constexpr int kEventIdx = 29;
constexpr int kVersion1 = 32;
constexpr uint32_t kSegMaxValue = 254;
constexpr size_t kConfigBytes = 60;  // struct virtio_blk_config up to write_zeroes_may_unmap.

class NullBlk final : public vhost_user::DeviceInterface {
 public:
  explicit NullBlk(uint64_t capacity_bytes) {
    uint64_t sectors = capacity_bytes / blk::kSectorSize;
    uint32_t blk_size = 512;
    std::memcpy(config_.data(), &sectors, 8);            // capacity
    std::memcpy(config_.data() + 12, &kSegMaxValue, 4);  // seg_max
    std::memcpy(config_.data() + 20, &blk_size, 4);      // blk_size
    disk_.capacity_sectors = sectors;
    disk_.discard = disk_.write_zeroes = false;
  }
  void attach(const vhost_user::Backend& b) { backend_ = &b; }

  uint64_t features() const override {
    return bit(kVersion1) | bit(kEventIdx) | bit(kIndirectDesc) | bit(kFlush) | bit(kSegMax) | bit(kBlkSize);
  }
  uint64_t protocol_features() const override { return bit(vhost_user::protocol_feature::kConfig); }
  uint32_t num_queues() const override { return 1; }
  uint32_t max_queue_size() const override { return 1024; }
  Result<void> set_features(uint64_t acked) override {
    acked_ = acked;
    return {};
  }
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) override {
    // Fields past ours read as zero, as they do on a device that does not offer them.
    std::vector<uint8_t> out(size, 0);
    for (uint64_t i = 0; i < size; ++i) {
      if (offset + i < kConfigBytes) out[i] = config_[offset + i];
    }
    return out;
  }
  Result<void> set_config(uint32_t, std::span<const uint8_t>, uint32_t) override { return {}; }

  Result<void> on_queue_started(uint32_t, const vhost_user::Vring& vring) override {
    vring_ = &vring;
    MOSS_CHECK(make_queue(vring.base));
    return {};
  }
  uint16_t on_queue_stopped(uint32_t) override {
    uint16_t next = queue_ ? queue_->last_avail_idx() : 0;
    queue_.reset();
    vring_ = nullptr;
    return next;
  }
  void on_memory_changing() override {
    // Our Queue points into the old mapping: rebuild it on the next kick.
    if (queue_) {
      resume_at_ = queue_->last_avail_idx();
      queue_.reset();
    }
  }
  void reset() override {
    queue_.reset();
    vring_ = nullptr;
  }

  void on_kick() {
    if (vring_ == nullptr || !vring_->enabled || broken_) return;
    if (!queue_ && (!resume_at_ || !make_queue(*resume_at_).ok())) return;
    virtio::Queue& q = *queue_;
    for (;;) {
      q.disable_notification();
      for (;;) {
        auto chain = q.pop();
        if (!chain.ok()) {
          std::fprintf(stderr, "null blk: the queue is broken: %s\n", chain.error().message.c_str());
          broken_ = true;
          return;
        }
        if (!chain->has_value()) break;
        blk::Parsed p = blk::parse_request(**chain, disk_);
        uint32_t written = 0;
        if (p.request) {
          p.request->status[0] = blk::kOk;
          bool in = p.request->type == blk::Type::kIn || p.request->type == blk::Type::kGetId;
          written = static_cast<uint32_t>((in ? p.request->data_bytes : 0) + 1);
        } else if (!p.error->status_byte.empty()) {
          p.error->status_byte[0] = p.error->status;
          written = 1;
        }
        if (!q.push_used((*chain)->head, written).ok()) {
          broken_ = true;
          return;
        }
      }
      if (q.needs_notification() && vring_->call.valid()) {
        uint64_t one = 1;
        if (::write(vring_->call.get(), &one, sizeof one) < 0) std::perror("null blk: call eventfd");
      }
      if (!q.enable_notification()) return;
    }
  }

 private:
  Result<void> make_queue(uint16_t base) {
    virtio::QueueConfig c;
    c.size = static_cast<uint16_t>(vring_->num);
    c.desc_gpa = vring_->desc_gpa;
    c.avail_gpa = vring_->avail_gpa;
    c.used_gpa = vring_->used_gpa;
    c.event_idx = acked_ & bit(kEventIdx);
    c.indirect = acked_ & bit(kIndirectDesc);
    MOSS_TRY(auto q, virtio::Queue::create(backend_->memory(), c));
    queue_.emplace(std::move(q));
    queue_->set_last_avail_idx(base);
    resume_at_.reset();
    return {};
  }

  const vhost_user::Backend* backend_ = nullptr;
  std::array<uint8_t, kConfigBytes> config_{};
  blk::DiskGeometry disk_;
  uint64_t acked_ = 0;
  const vhost_user::Vring* vring_ = nullptr;
  std::optional<virtio::Queue> queue_;
  std::optional<uint16_t> resume_at_;
  bool broken_ = false;
};

// Serves one connection; false once SIGTERM arrived.
bool serve_connection(int conn, int sigfd, uint64_t capacity) {
  NullBlk dev(capacity);
  std::vector<int> kicks;
  vhost_user::Backend backend(dev, [&](int fd, uint32_t, bool add) {
    if (add) {
      kicks.push_back(fd);
    } else {
      std::erase(kicks, fd);
    }
  });
  dev.attach(backend);
  for (;;) {
    std::vector<pollfd> fds = {{conn, POLLIN, 0}, {sigfd, POLLIN, 0}};
    for (int k : kicks) fds.push_back({k, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::perror("null blk: poll");
      return false;
    }
    if (fds[1].revents & POLLIN) return false;
    for (size_t i = 2; i < fds.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      uint64_t n;
      if (::read(fds[i].fd, &n, sizeof n) < 0) continue;  // Non-blocking: another read won.
      dev.on_kick();
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      auto more = backend.serve_one(conn);
      if (!more.ok() || !*more) return true;
    }
  }
}

}  // namespace

int serve_null_blk(int listen_fd, unsigned long long capacity_bytes) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  int sigfd = ::signalfd(-1, &set, SFD_CLOEXEC);
  if (sigfd < 0) return 1;
  for (;;) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (fds[1].revents & POLLIN) return 0;
    int conn = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    bool go_on = serve_connection(conn, sigfd, capacity_bytes);
    ::close(conn);
    if (!go_on) return 0;
  }
}

}  // namespace moss::bench
