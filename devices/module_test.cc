// The device modules: what each plans for the broker (its worker's argv, the fds it is given
// and their numbers there, its sandbox) and for the vcpu process (the guest device).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "devices/blk/module.h"
#include "devices/modules.h"
#include "devices/null/module.h"
#include "devices/vsock/module.h"

namespace moss::device {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("moss-module-test-" + std::to_string(getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

std::string make_file(const fs::path& p, uint64_t size) {
  int fd = open(p.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  close(fd);
  return p.string();
}

// The file behind `fd` (a fd of the plan, as the broker would pass it).
struct stat stat_of(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return st;
}

TEST(Modules, TheRegistryKnowsEveryKindByName) {
  for (std::string_view kind : {"blk", "vsock", "null"}) {
    const Module* m = find(kind);
    ASSERT_NE(m, nullptr) << kind;
    EXPECT_EQ(m->kind(), kind);
  }
  EXPECT_EQ(find("net"), nullptr);
  EXPECT_EQ(kinds().size(), 3u);
}

TEST(BlkModule, ADiskIsAWorkerGivenItsConnectionDiskAndControlChannelByNumber) {
  TempDir t;
  std::string img = make_file(t.path / "a.img", 1 << 20);
  auto planned = blk::plan_disks({blk::Disk{img, true, false, std::nullopt}}, Vm{2, 64 << 20, true});
  ASSERT_TRUE(planned.ok()) << planned.error().message;
  ASSERT_EQ(planned->size(), 1u);
  Device& d = (*planned)[0];
  EXPECT_EQ(d.kind, "blk");
  EXPECT_EQ(d.name, "disk 1 (" + img + ")");
  ASSERT_TRUE(d.worker.has_value());
  WorkerPlan& w = *d.worker;
  EXPECT_EQ(w.program, "moss-blk");
  EXPECT_EQ(w.description, "blk worker for " + img);
  EXPECT_EQ(w.argv, (std::vector<std::string>{"moss-blk", "--fd", "3", "--control-fd", "4", "--disk-fd", "5", "--disk",
                                              img, "--readonly", "--num-queues", "2"}));
  ASSERT_EQ(w.fds.size(), 3u);
  // fd 5 is the image, opened here: the jailed worker has no path to open.
  struct stat want {};
  ASSERT_EQ(stat(img.c_str(), &want), 0);
  EXPECT_EQ(stat_of(w.fds[2]).st_ino, want.st_ino);
  EXPECT_EQ(fcntl(w.fds[2], F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_TRUE(S_ISSOCK(stat_of(w.fds[0]).st_mode));
  EXPECT_TRUE(S_ISSOCK(stat_of(w.fds[1]).st_mode));
  EXPECT_TRUE(w.control.valid());
  EXPECT_TRUE(d.vhost_user.valid());
  EXPECT_EQ(w.role, sandbox::Role("blk"));
  EXPECT_EQ(w.limits.fsize, 64ull << 20);  // At least 64 MiB, or the disk's size.
  EXPECT_EQ(w.limits.nofile, blk::limits(2, 1 << 20).nofile);
  // The guest sees a virtio-blk function with a queue per vCPU.
  EXPECT_EQ(d.guest.virtio_id, 2);
  EXPECT_EQ(d.guest.pci_class, 0x010000u);
  EXPECT_EQ(d.guest.config_size, 60u);
  EXPECT_EQ(d.guest.num_queues, 2);
  EXPECT_EQ(d.guest.min_queues, 1);
  EXPECT_EQ(d.guest.multiqueue_feature, 12);
  EXPECT_EQ(d.guest.queue_count_offset, 34);
}

TEST(BlkModule, OneFileUnderTwoNamesIsRefused) {
  TempDir t;
  std::string img = make_file(t.path / "a.img", 1 << 20);
  fs::create_symlink(img, t.path / "b.img");
  blk::Disk a, b;
  a.path = img;
  b.path = (t.path / "b.img").string();
  auto planned = blk::plan_disks({a, b}, Vm{});
  ASSERT_FALSE(planned.ok());
  EXPECT_EQ(planned.error().message, "the disk " + (t.path / "b.img").string() + " is the same file as the disk " + img +
                                         " given before it; give each disk once");
}

TEST(BlkModule, AnExternalBackendHasNoWorker) {
  TempDir t;
  std::string path = (t.path / "qsd.sock").string();
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(l, 1), 0);
  UniqueFd listener(l);
  blk::Disk disk;
  disk.path = path;
  disk.vhost_user = true;
  auto planned = blk::plan_disks({disk}, Vm{1, 64 << 20, true});
  ASSERT_TRUE(planned.ok()) << planned.error().message;
  EXPECT_FALSE((*planned)[0].worker.has_value());
  EXPECT_TRUE((*planned)[0].vhost_user.valid());
  EXPECT_EQ((*planned)[0].guest.virtio_id, 2);
}

TEST(VsockModule, TheWorkerGetsItsFdsByNumberAndKeepsNoPath) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd keep(sv[0]);
  auto d = vsock::plan(vsock::Host{7, UniqueFd(dup(sv[1])), UniqueFd(sv[1])}, Vm{});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->worker->argv, (std::vector<std::string>{"moss-vsock", "--fd", "3", "--guest-cid", "7", "--uds-fd", "4",
                                                       "--connect-fd", "5"}));
  for (const auto& a : d->worker->argv) EXPECT_EQ(a.find('/'), std::string::npos) << "a path in its argv: " << a;
  EXPECT_EQ(d->worker->role, sandbox::Role("vsock"));
  EXPECT_EQ(d->guest.virtio_id, 19);
  EXPECT_EQ(d->guest.num_queues, 3);
  EXPECT_EQ(d->guest.min_queues, 3);
  EXPECT_EQ(d->guest.config_size, 8u);
  EXPECT_FALSE(find("vsock")->plan("", Vm{}).ok());  // Added by moss run itself, once.
}

TEST(NullModule, DeviceNullIsAMossNullWorkerAndAVirtioBlkGuestDevice) {
  auto d = find("null")->plan("capacity=1048576,num-queues=2", Vm{4, 64 << 20, true});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->kind, "null");
  ASSERT_TRUE(d->worker.has_value());
  EXPECT_EQ(d->worker->program, "moss-null");
  EXPECT_EQ(d->worker->argv, (std::vector<std::string>{"moss-null", "--fd", "3", "--control-fd", "4", "--capacity",
                                                       "1048576", "--num-queues", "2"}));
  EXPECT_EQ(d->worker->fds.size(), 2u);
  EXPECT_TRUE(d->worker->control.valid());
  EXPECT_EQ(d->guest.virtio_id, 2);
  EXPECT_EQ(d->guest.num_queues, 2);
  // One queue per vCPU unless told.
  auto per_cpu = find("null")->plan("capacity=512", Vm{3, 64 << 20, true});
  ASSERT_TRUE(per_cpu.ok());
  EXPECT_EQ(per_cpu->guest.num_queues, 3);
}

TEST(NullModule, BadOptionsAreOneSentence) {
  EXPECT_EQ(null::parse("").error().message, "--device null needs capacity=BYTES");
  EXPECT_EQ(null::parse("capacity=100").error().message,
            "--device null: capacity needs a size in bytes, a nonzero multiple of 512, not '100'");
  EXPECT_EQ(null::parse("capacity=512,num-queues=0").error().message,
            "--device null: num-queues needs a number from 1 to 64, not '0'");
  EXPECT_EQ(null::parse("capacity=512,color=red").error().message,
            "--device null: unknown option 'color' (it takes capacity=BYTES[,num-queues=N])");
}

TEST(Modules, StandaloneLimitsComeFromTheWorkersOptions) {
  auto args = [](std::string_view name) -> std::optional<std::string> {
    if (name == "--num-queues") return "4";
    if (name == "--max-connections") return "1000";
    return std::nullopt;
  };
  EXPECT_EQ(find("blk")->standalone_limits(args).nofile, blk::limits(4, 0).nofile);
  EXPECT_EQ(find("vsock")->standalone_limits(args).nofile, vsock::limits(1000).nofile);
  EXPECT_EQ(find("vsock")->socket_options(), (std::vector<std::string>{"--socket-path", "--uds-path"}));
}

TEST(SplitOptions, KeysValuesAndFlags) {
  auto o = split_options("a=1,b,,c=x=y");
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].key, "a");
  EXPECT_EQ(o[0].value, "1");
  EXPECT_EQ(o[1].key, "b");
  EXPECT_FALSE(o[1].value.has_value());
  EXPECT_EQ(o[2].key, "c");
  EXPECT_EQ(o[2].value, "x=y");
}

// Every kind's worker runs under the role of its name: the recipe's policy file is there.
TEST(Modules, EveryKindHasThePolicyOfItsName) {
  for (std::string_view kind : kinds()) {
    auto role = sandbox::role_from_name(kind);
    ASSERT_TRUE(role.has_value()) << "no policies/" << kind << ".policy for the " << kind << " device";
    EXPECT_EQ(find(kind)->role(), *role);
  }
}

}  // namespace
}  // namespace moss::device
