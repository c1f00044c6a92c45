// Our Frontend against a third-party backend: qemu-storage-daemon's vhost-user-blk export.
// Skipped when qemu-storage-daemon is not installed.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "vhost-user/frontend.h"

extern char** environ;

namespace moss::vhost_user {
namespace {

using namespace protocol_feature;

constexpr const char* kQsd = "/usr/bin/qemu-storage-daemon";
constexpr uint64_t kImageBytes = (3 << 20) + 5 * 512;  // Not a round size, to check the arithmetic.
constexpr int kVirtioFVersion1 = 32;

// One qemu-storage-daemon exporting a raw image over vhost-user-blk; stopped by pid.
class QsdExport {
 public:
  QsdExport() {
    char tmpl[] = "/tmp/moss-qsd-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    image_ = dir_ + "/disk.img";
    socket_ = dir_ + "/vhost.sock";
    int fd = ::open(image_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(kImageBytes)), 0);
    ::close(fd);

    std::vector<std::string> args = {
        kQsd,
        "--blockdev", "driver=file,node-name=f0,filename=" + image_,
        "--blockdev", "driver=raw,node-name=d0,file=f0",
        "--export", "type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=" + socket_ + ",writable=on",
    };
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string log = dir_ + "/qsd.log";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    EXPECT_EQ(::posix_spawn(&pid_, kQsd, &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }

  ~QsdExport() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status;
      ::waitpid(pid_, &status, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Waits up to 10 s for the socket to appear.
  bool wait_ready() {
    for (int i = 0; i < 500; i++) {
      struct stat st;
      if (::stat(socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  const std::string& socket() const { return socket_; }

 private:
  std::string dir_, image_, socket_;
  pid_t pid_ = -1;
};

TEST(FrontendAgainstQemuStorageDaemon, ReadsTheBlockDevicesCapacity) {
  if (::access(kQsd, X_OK) != 0) GTEST_SKIP() << "qemu-storage-daemon is not installed";
  QsdExport qsd;
  ASSERT_TRUE(qsd.wait_ready()) << "qemu-storage-daemon did not create its socket";
  auto fe = Frontend::connect(qsd.socket());
  ASSERT_TRUE(fe.ok()) << fe.error().message;

  auto features = fe->get_features();
  ASSERT_TRUE(features.ok()) << features.error().message;
  EXPECT_TRUE(*features & bit(kFeatureProtocolFeatures));
  EXPECT_TRUE(*features & bit(kVirtioFVersion1));
  ASSERT_TRUE(fe->set_owner().ok());

  auto offered = fe->get_protocol_features();
  ASSERT_TRUE(offered.ok()) << offered.error().message;
  ASSERT_TRUE(*offered & bit(kConfig));
  ASSERT_TRUE(*offered & bit(kReplyAck));
  uint64_t understood = bit(kMq) | bit(kReplyAck) | bit(kConfig) | bit(kInflightShmfd) | bit(kConfigureMemSlots);
  ASSERT_TRUE(fe->set_protocol_features(*offered & understood).ok());

  // virtio-blk config space starts with the capacity in 512-byte sectors.
  auto config = fe->get_config(0, 8);
  ASSERT_TRUE(config.ok()) << config.error().message;
  uint64_t capacity;
  std::memcpy(&capacity, config->data(), 8);
  EXPECT_EQ(capacity, kImageBytes / 512);

  auto queues = fe->get_queue_num();
  ASSERT_TRUE(queues.ok()) << queues.error().message;
  EXPECT_GE(*queues, 1u);

  // The acked requests below check that our REPLY_ACK handling and payload layouts match
  // a foreign implementation.
  ASSERT_TRUE(fe->set_features(bit(kVirtioFVersion1) | bit(kFeatureProtocolFeatures)).ok());
  int mem = ::memfd_create("moss-qsd-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(mem, 0);
  UniqueFd guest(mem);
  ASSERT_EQ(::ftruncate(mem, 1 << 20), 0);
  MemoryRegion r{0, 1 << 20, 0x7f3400000000, 0};
  auto table = fe->set_mem_table(std::span<const MemoryRegion>(&r, 1), std::span<const int>(&mem, 1));
  ASSERT_TRUE(table.ok()) << table.error().message;
  if (*offered & bit(kConfigureMemSlots)) {
    auto slots = fe->get_max_mem_slots();
    ASSERT_TRUE(slots.ok()) << slots.error().message;
    EXPECT_GE(*slots, 2u);
    MemoryRegion r2{1 << 20, 1 << 19, 0x7f3500000000, 1 << 19};  // The second half of the same file.
    auto add = fe->add_mem_reg(r2, mem);
    ASSERT_TRUE(add.ok()) << add.error().message;
    auto rem = fe->rem_mem_reg(r2);
    ASSERT_TRUE(rem.ok()) << rem.error().message;
  }
  if (*offered & bit(kInflightShmfd)) {
    auto in = fe->get_inflight_fd(1, 128);
    ASSERT_TRUE(in.ok()) << in.error().message;
    EXPECT_GT(in->info.mmap_size, 0u);
    EXPECT_TRUE(in->fd.valid());
  }
  auto base = fe->get_vring_base(0);  // Never started: the base it was given (0).
  ASSERT_TRUE(base.ok()) << base.error().message;
  EXPECT_EQ(*base, 0u);
}

}  // namespace
}  // namespace moss::vhost_user
