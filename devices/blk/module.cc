#include "devices/blk/module.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include <xxhash.h>

#include "base/disk_lock.h"
#include "base/file.h"
#include "base/syscall.h"

namespace moss::device::blk {
namespace {

constexpr uint16_t kVirtioId = 2;
constexpr uint32_t kPciClass = 0x010000;  // Mass storage, SCSI: what QEMU's virtio-blk-pci reports.
// struct virtio_blk_config up to write_zeroes_may_unmap and its padding (5.2.4): what QEMU's
// vhost-user-blk frontend asks GET_CONFIG for, so backends written for QEMU answer.
constexpr uint32_t kConfigSize = 60;
constexpr int16_t kFeatureMq = 12;          // VIRTIO_BLK_F_MQ
constexpr int32_t kNumQueuesOffset = 34;    // le16 num_queues in struct virtio_blk_config
constexpr uint32_t kMaxQueues = 64;         // What a virtio-pci function of the vcpu process carries.

Result<UniqueFd> connect_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error("the socket path " + path + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  MOSS_TRY(int fd, MOSS_SYS(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd sock(fd);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return sys_error("connect to the vhost-user backend at", path);
  }
  return sock;
}

// A vhost-user backend is sent the guest's memory (the memfd, mapped read-write) and its
// rings: whoever listens at the path must be this user or root, or the uid the user named
// (",peer-uid=N"). Checked right after connect, before a byte is sent; a socket another user
// put at a well-known path (/tmp/qsd.sock) is refused.
Result<void> check_backend_peer(int sock, const Disk& d) {
  ucred cred{};
  socklen_t len = sizeof cred;
  MOSS_TRY_VOID(MOSS_SYS(getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len)));
  const uid_t me = geteuid();
  if (cred.uid == me || cred.uid == 0 || (d.peer_uid && cred.uid == *d.peer_uid)) return {};
  const std::string uid = std::to_string(cred.uid);
  return make_error("the vhost-user backend at " + d.path + " runs as uid " + uid + ", neither you (uid " +
                    std::to_string(me) + ") nor root, and would be given the guest's memory; if you trust that user, "
                    "give --vhost-user-blk " + d.path + ",peer-uid=" + uid);
}

Result<Device> plan_external(const Disk& d, size_t index, const Vm& vm) {
  Device dev;
  dev.kind = "blk";
  dev.name = "disk " + std::to_string(index + 1) + " (" + d.path + ")";
  dev.guest = guest_device(vm.cpus);
  MOSS_TRY(dev.vhost_user, connect_unix(d.path));
  MOSS_TRY_VOID(check_backend_peer(dev.vhost_user.get(), d));
  return dev;
}

// The disk's identity: two names of one file (or block device) are one disk.
using Identity = std::pair<dev_t, ino_t>;

Result<Device> plan_worker(const Disk& d, size_t index, const Vm& vm,
                           std::vector<std::pair<std::string, Identity>>& seen) {
  // Opened here and passed in: the jailed worker has no path to open.
  int fd = open(d.path.c_str(), (d.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) {
    return sys_error("open", "the disk " + d.path + (d.readonly ? " for reading" : " for reading and writing"));
  }
  UniqueFd disk(fd);
  struct stat st;
  MOSS_TRY_VOID(MOSS_SYS(fstat(fd, &st)));
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return make_error("the disk " + d.path + " is neither a regular file nor a block device");
  }
  Identity identity = S_ISBLK(st.st_mode) ? Identity{0, static_cast<ino_t>(st.st_rdev)} : Identity{st.st_dev, st.st_ino};
  for (const auto& [path, id] : seen) {
    if (id == identity) {
      return make_error("the disk " + d.path + " is the same " + (S_ISBLK(st.st_mode) ? "device" : "file") +
                        " as the disk " + path + " given before it; give each disk once");
    }
  }
  seen.emplace_back(d.path, identity);
  // One disk, one writer (base/disk_lock.h): another moss or QEMU using it is refused. The
  // lock is on this open file, so it stays with the worker this fd is passed to.
  MOSS_TRY_VOID(lock_disk(fd, d.readonly, "the disk " + d.path));

  MOSS_TRY(Device dev, device::plan_worker({.kind = "blk",
                                             .name = "disk " + std::to_string(index + 1) + " (" + d.path + ")",
                                             .guest = guest_device(vm.cpus),
                                             .program = "moss-blk",
                                             .description = "blk worker for " + d.path,
                                             .role = module().role(),
                                             .limits = limits(vm.cpus, disk_bytes(disk.get()))}));
  // A spore records the disk as it is when the VM is paused: the broker keeps a copy of the
  // fd for that (the worker gets the disk itself).
  int copy = fcntl(disk.get(), F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return sys_error("keep", "the disk " + d.path);
  auto kept = std::make_shared<UniqueFd>(copy);
  dev.record = [kept, readonly = d.readonly, what = "the disk " + d.path]() -> Result<std::vector<uint8_t>> {
    MOSS_TRY(DiskRecord r, record_disk(kept->get(), readonly, what));
    return encode_disk_record(r);
  };
  WorkerPlan& w = *dev.worker;
  w.pass_as("--disk-fd", std::move(disk));
  w.option_value("--disk", d.path);
  if (d.readonly) w.argv.push_back("--readonly");
  w.option_value("--num-queues", std::to_string(vm.cpus));
  return dev;
}

class BlkModule final : public Module {
 public:
  std::string_view kind() const override { return "blk"; }
  Result<Device> plan(std::string_view, const Vm&) const override {
    return make_error("disks are given with --disk PATH[,ro] or --vhost-user-blk SOCKET, not --device blk");
  }
  std::string noun() const override { return "disk"; }
  std::string option() const override { return "--disk"; }
  Result<void> check_recorded(std::span<const uint8_t> recorded, std::span<const uint8_t> given,
                              unsigned nth) const override {
    const std::string what = "disk " + std::to_string(nth);
    // An external backend's disk is out of moss's reach: nothing was recorded of it, and
    // nothing can be checked now.
    if (recorded.empty()) {
      return make_error(what + " was served by a vhost-user backend when the spore was made, which moss cannot check; "
                        "a spore restores only with the disks moss served");
    }
    if (given.empty()) {
      return make_error(what + " is given as a vhost-user backend, which cannot be checked against the spore; give each "
                        "disk with --disk");
    }
    MOSS_TRY(DiskRecord was, decode_disk_record(recorded));
    MOSS_TRY(DiskRecord now, decode_disk_record(given));
    return same_disk(was, now, what);
  }
  sandbox::Limits standalone_limits(const ArgLookup& arg) const override {
    uint64_t queues = number_arg(arg, "--num-queues", 1, 256);
    auto path = arg("--disk");
    if (!path) path = arg("--blk-file");
    uint64_t bytes = 0;
    if (path) {
      // The size the jail allows the worker to write up to: the disk's (0 if it cannot be
      // told: the worker then refuses the disk itself, with its own sentence).
      UniqueFd fd(::open(path->c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
      if (fd.valid()) bytes = disk_bytes(fd.get());
    }
    return limits(static_cast<uint32_t>(queues), bytes);
  }
};

}  // namespace

GuestDevice guest_device(uint32_t cpus) {
  return {.virtio_id = kVirtioId,
          .pci_class = kPciClass,
          .config_size = kConfigSize,
          .num_queues = static_cast<uint16_t>(cpus < kMaxQueues ? cpus : kMaxQueues),
          .min_queues = 1,
          .multiqueue_feature = kFeatureMq,
          .queue_count_offset = kNumQueuesOffset};
}

Result<std::vector<Device>> plan_disks(const std::vector<Disk>& disks, const Vm& vm) {
  std::vector<Device> out;
  std::vector<std::pair<std::string, Identity>> seen;
  for (size_t i = 0; i < disks.size(); i++) {
    if (disks[i].vhost_user) {
      MOSS_TRY(Device d, plan_external(disks[i], i, vm));
      out.push_back(std::move(d));
    } else {
      MOSS_TRY(Device d, plan_worker(disks[i], i, vm, seen));
      out.push_back(std::move(d));
    }
  }
  return out;
}

sandbox::Limits limits(uint32_t queues, uint64_t disk_bytes) {
  // The disk, the io_uring and its eventfd and the inflight buffer fit in the base; then a
  // kick and a call eventfd per queue.
  sandbox::Limits l = worker_limits(2ull * queues);
  // clone is not in blk.policy; these are io_uring's io-wq workers, which the kernel counts
  // as the worker's tasks and caps at this limit.
  l.nproc = 64 + 4ull * queues;
  // Writes stay inside the disk; the inflight buffer (a memfd it sizes) is far smaller than
  // 64 MiB.
  l.fsize = disk_bytes > 64 * kMiB ? disk_bytes : 64 * kMiB;
  // Kernels before 5.12 charge io_uring's rings to RLIMIT_MEMLOCK.
  l.memlock = 8 * kMiB;
  return l;
}

uint64_t disk_bytes(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return 0;
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    return ioctl(fd, BLKGETSIZE64, &size) == 0 ? size : 0;
  }
  return static_cast<uint64_t>(st.st_size);
}

namespace {

void put_le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get_le(std::span<const uint8_t> in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= static_cast<uint64_t>(in[at + static_cast<size_t>(i)]) << (8 * i);
  return v;
}

}  // namespace

std::vector<uint8_t> encode_disk_record(const DiskRecord& r) {
  std::vector<uint8_t> out;
  put_le(out, kDiskRecordVersion, 4);
  put_le(out, r.readonly ? 1 : 0, 4);
  put_le(out, r.bytes, 8);
  put_le(out, r.id_hi, 8);
  put_le(out, r.id_lo, 8);
  return out;
}

Result<DiskRecord> decode_disk_record(std::span<const uint8_t> in) {
  if (in.size() != kDiskRecordBytes) {
    return make_error("the spore's record of a disk is " + std::to_string(in.size()) + " bytes, not " +
                      std::to_string(kDiskRecordBytes));
  }
  if (get_le(in, 0, 4) != kDiskRecordVersion) {
    return make_error("the spore's record of a disk has version " + std::to_string(get_le(in, 0, 4)) +
                      ", which this moss does not know");
  }
  uint64_t flags = get_le(in, 4, 4);
  if (flags & ~1ull) return make_error("the spore's record of a disk has unknown flags");
  DiskRecord r;
  r.readonly = flags & 1;
  r.bytes = get_le(in, 8, 8);
  r.id_hi = get_le(in, 16, 8);
  r.id_lo = get_le(in, 24, 8);
  return r;
}

Result<DiskRecord> record_disk(int fd_in, bool readonly, const std::string& what) {
  constexpr uint64_t kSample = 1ull << 20;
  // A file description of our own: the worker may have turned O_DIRECT on for the one it
  // shares with us, whose alignment rules buffered reads here need not follow.
  int own = open(("/proc/self/fd/" + std::to_string(fd_in)).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (own < 0) return sys_error("read", what);
  UniqueFd reopened(own);
  const int fd = reopened.get();
  DiskRecord r;
  r.readonly = readonly;
  r.bytes = disk_bytes(fd);
  XXH3_state_t* state = XXH3_createState();
  if (state == nullptr) return make_error("out of memory to read " + what);
  XXH3_128bits_reset(state);
  std::vector<uint8_t> buf(kSample);
  // The first MiB, and the last MiB when the disk is larger (the two may overlap).
  std::vector<std::pair<uint64_t, uint64_t>> spans{{0, r.bytes < kSample ? r.bytes : kSample}};
  if (r.bytes > kSample) spans.push_back({r.bytes - kSample, kSample});
  Result<void> read_ok;
  for (auto [start, want] : spans) {
    size_t got = 0;
    while (got < want) {
      ssize_t n = pread(fd, buf.data() + got, want - got, static_cast<off_t>(start + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        read_ok = n < 0 ? sys_error("read", what) : make_error(what + " ended before its size");
        break;
      }
      got += static_cast<size_t>(n);
    }
    if (!read_ok) break;
    XXH3_128bits_update(state, buf.data(), got);
  }
  XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  if (!read_ok) return read_ok.error();
  r.id_hi = h.high64;
  r.id_lo = h.low64;
  return r;
}

Result<void> same_disk(const DiskRecord& recorded, const DiskRecord& given, const std::string& what) {
  if (recorded.bytes != given.bytes) {
    return make_error(what + " is " + std::to_string(given.bytes) + " bytes and the spore's disk was " +
                      std::to_string(recorded.bytes) + "; give the disk the spore was made with");
  }
  if (recorded.id_hi != given.id_hi || recorded.id_lo != given.id_lo) {
    return make_error(what + " is not the disk the spore was made with (its first and last MiB differ); give that disk, "
                      "unchanged since the suspend");
  }
  if (recorded.readonly != given.readonly) {
    return make_error(what + std::string(" was ") + (recorded.readonly ? "read-only" : "writable") +
                      " when the spore was made; give it " + (recorded.readonly ? "with ,ro" : "without ,ro"));
  }
  return {};
}

const Module& module() {
  static const BlkModule m;
  return m;
}

}  // namespace moss::device::blk
