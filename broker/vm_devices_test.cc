// broker/vm_devices: the modules' plans started as `moss run` starts them, against the real
// moss-blk, moss-vsock and moss-null, jailed: each worker's argv numbers are the fds it got (it answers
// on its vhost-user connection and its control channel), and the vcpu process's device list
// names the fd numbers its ChildSpec will give it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <capnp/message.h>

#include "broker/vm_devices.h"
#include "broker/vm_vsock.h"
#include "broker/worker_control.h"
#include "vhost-user/frontend.h"

namespace moss::vmdevices {
namespace {

namespace fs = std::filesystem;

std::string build_dir() {
  const char* d = std::getenv("MOSS_BUILD_DIR");
  return d ? d : ".";
}

struct Fixture {
  fs::path root = fs::temp_directory_path() / ("moss-vm-devices-" + std::to_string(getpid()));
  std::string img;
  cli::RunOptions options;
  std::unique_ptr<vmvsock::Plan> vsock;
  Fixture() {
    fs::create_directories(root);
    img = (root / "disk.img").string();
    int fd = open(img.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_EQ(ftruncate(fd, 1 << 20), 0);
    close(fd);
    options.cpus = 2;
    options.mem_bytes = 64 << 20;
    cli::Disk d;
    d.path = img;
    options.disks.push_back(d);
    auto p = vmvsock::Plan::prepare((root / "rt").string(), (root / "vm.sock").string(), 0);
    EXPECT_TRUE(p.ok()) << p.error().message;
    if (p) vsock = std::move(*p);
  }
  ~Fixture() { fs::remove_all(root); }
};

TEST(VmDevices, DisksThenDevicesThenVsockInSlotOrder) {
  Fixture f;
  f.options.devices.push_back({"null", "capacity=4096"});
  auto devices = plan(f.options, f.vsock->worker_host());
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  ASSERT_EQ(devices->size(), 3u);
  EXPECT_EQ((*devices)[0].kind, "blk");
  EXPECT_EQ((*devices)[0].name, "disk 1 (" + f.img + ")");
  EXPECT_EQ((*devices)[1].kind, "null");
  EXPECT_EQ((*devices)[2].kind, "vsock");
  EXPECT_EQ(total_queues(*devices), 2u + 2u + 3u);
  // The plan holds the disk's lock until the worker has it: a second plan of it is refused.
  EXPECT_NE(plan(f.options, {}).error().message.find("is in use by another process"), std::string::npos);
  devices->clear();
  f.options.devices = {{"null", "capacity=5"}};
  EXPECT_EQ(plan(f.options, {}).error().message,
            "--device null: capacity needs a size in bytes, a nonzero multiple of 512, not '5'");
}

TEST(VmDevices, PlannedWorkersStartJailedAndAnswerOnTheFdsTheirArgvNames) {
  Fixture f;
  auto devices = plan(f.options, f.vsock->worker_host());
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  auto workers = start_workers(*devices, build_dir(), /*jailed=*/true);
  ASSERT_TRUE(workers.ok()) << workers.error().message;
  ASSERT_EQ(workers->size(), 2u);
  EXPECT_EQ((*workers)[0].kind, "blk");
  EXPECT_EQ((*workers)[0].description, "blk worker for " + f.img);
  EXPECT_EQ((*workers)[1].kind, "vsock");
  EXPECT_EQ((*workers)[1].description, "vsock worker");
  // moss-blk answers its --control-fd about the --disk-fd it serves, with --num-queues.
  ASSERT_TRUE((*workers)[0].control.valid());
  auto described = worker::call((*workers)[0].control.get(), worker::Request::kDescribe);
  ASSERT_TRUE(described.ok()) << described.error().message;
  EXPECT_EQ(described->description.detail("capacityBytes"), std::to_string(1u << 20));
  EXPECT_EQ(described->description.num_queues, 2u);
  EXPECT_EQ(described->description.detail("readOnly"), "false");
  // Each answers on its --fd, the other end of what the vcpu process would get.
  for (auto& d : *devices) {
    vhost_user::Frontend fe(std::move(d.vhost_user));
    auto features = fe.get_features();
    EXPECT_TRUE(features.ok()) << d.name << ": " << (features ? "" : features.error().message);
  }
  kill_workers(*workers);
  for (const auto& w : *workers) EXPECT_EQ(w.pid, -1);
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

// The null device (devices/null/) is added by its folder alone: `--device null,...` reaches its
// module through the registry, and the broker starts moss-null jailed like any worker, from
// the plan's argv and fds, with no line here or in the broker that names it.
TEST(VmDevices, ADeviceOfAnyKindIsPlannedByItsModuleAndItsWorkerStartsJailed) {
  Fixture f;
  f.options.disks.clear();
  f.options.devices.push_back({"null", "capacity=1048576,num-queues=3"});
  auto devices = plan(f.options, f.vsock->worker_host());
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].kind, "null");
  EXPECT_EQ((*devices)[0].guest.num_queues, 3u);
  auto workers = start_workers(*devices, build_dir(), /*jailed=*/true);
  ASSERT_TRUE(workers.ok()) << workers.error().message;
  ASSERT_EQ(workers->size(), 2u);
  EXPECT_EQ((*workers)[0].kind, "null");
  EXPECT_EQ((*workers)[0].description, "null worker");
  // moss-null answers its --control-fd with what its --capacity and --num-queues said.
  ASSERT_TRUE((*workers)[0].control.valid());
  auto described = worker::call((*workers)[0].control.get(), worker::Request::kDescribe);
  ASSERT_TRUE(described.ok()) << described.error().message;
  EXPECT_EQ(described->description.kind, "null");
  EXPECT_EQ(described->description.num_queues, 3u);
  EXPECT_EQ(described->description.detail("capacityBytes"), "1048576");
  // And its --fd is a vhost-user backend of a virtio-blk device: VERSION_1, protocol features,
  // flush and multiqueue offered.
  vhost_user::Frontend fe(std::move((*devices)[0].vhost_user));
  auto features = fe.get_features();
  ASSERT_TRUE(features.ok()) << features.error().message;
  for (int bit : {32 /* VIRTIO_F_VERSION_1 */, 30 /* VHOST_USER_F_PROTOCOL_FEATURES */, 9 /* VIRTIO_BLK_F_FLUSH */,
                  12 /* VIRTIO_BLK_F_MQ */}) {
    EXPECT_TRUE(*features & (1ull << bit)) << "feature bit " << bit << " not offered: " << std::hex << *features;
  }
  kill_workers(*workers);
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(VmDevices, AWorkerThatCannotStartIsNamedAndThoseBeforeItAreReaped) {
  Fixture f;
  auto devices = plan(f.options, f.vsock->worker_host());
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  // moss-blk is there, moss-vsock is not.
  fs::path dir = f.root / "bin";
  fs::create_directories(dir);
  fs::create_symlink(fs::absolute(build_dir()) / "moss-blk", dir / "moss-blk");
  auto workers = start_workers(*devices, dir.string(), true);
  ASSERT_FALSE(workers.ok());
  EXPECT_EQ(workers.error().message.rfind("cannot start the vsock worker: the vsock process (" + (dir / "moss-vsock").string() +
                                              ") could not be started: cannot execute the program",
                                          0),
            0u)
      << workers.error().message;
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(VmDevices, TheStartMessageNamesTheNumbersTheVcpuProcessGets) {
  Fixture f;
  auto devices = plan(f.options, f.vsock->worker_host());
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  ChildSpec vcpu;
  vcpu.pass_fd(0);  // Whatever came before (control channel, KVM, kernel).
  vcpu.pass_fd(1);
  capnp::MallocMessageBuilder mb;
  auto start = mb.initRoot<ipc::MachineConfig>();
  describe(*devices, vcpu, start);
  auto list = start.asReader().getDevices();
  ASSERT_EQ(list.size(), 2u);
  for (unsigned i = 0; i < list.size(); i++) {
    int n = list[i].getFd();
    ASSERT_GE(n, sandbox::PassedFds::kFirst);
    EXPECT_EQ(vcpu.fds[static_cast<size_t>(n - sandbox::PassedFds::kFirst)], (*devices)[i].vhost_user.get());
    EXPECT_EQ(list[i].getName().cStr(), (*devices)[i].name);
    EXPECT_EQ(list[i].getVirtioId(), (*devices)[i].guest.virtio_id);
    EXPECT_EQ(list[i].getNumQueues(), (*devices)[i].guest.num_queues);
  }
  EXPECT_EQ(list[0].getQueueCountOffset(), 34);
  EXPECT_EQ(list[1].getMinQueues(), 3);
}

}  // namespace
}  // namespace moss::vmdevices
