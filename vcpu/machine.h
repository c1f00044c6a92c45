// The virtual machine inside the vcpu process: guest RAM (one memfd), the KVM VM with its
// in-kernel irqchip and PIT, the platform devices that trap to us (8250 UART, i8042, the
// moss exit port), and one thread per vCPU running the exit loop.
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "ipc/guest_abi.h"
#include "vcpu/i8042.h"
#include "vcpu/kvm.h"
#include "vcpu/pci.h"
#include "vcpu/uart.h"
#include "vcpu/vhost_user_device.h"
#include "vcpu/virtio_pci.h"

namespace moss {

// I/O port a guest writes its exit status to (32 bits, or fewer): the VM ends with it.
// moss-init reports the guest command's status here; freestanding test guests report results.
// The number is part of the host/guest contract (ipc/guest_abi.h).
constexpr uint16_t kExitPort = guest_abi::kExitPort;

// One virtio device of a saved machine (ipc/vcpu.capnp DeviceState): the transport blob
// (virtio_pci.h encode_transport_state, with the ring bases) and the backend's bytes.
struct SavedDevice {
  std::vector<uint8_t> transport;
  std::vector<uint8_t> backend;
};

// A saved machine to continue instead of booting a kernel (MachineConfig.restore), already
// decoded (vcpu/cpu_state_codec.h); the device blobs are checked against the devices here.
struct MachineRestoreData {
  std::vector<VcpuState> cpus;
  VmState vm;
  UartState uart;
  I8042State i8042;
  std::vector<SavedDevice> devices;
  bool realtime = false;
};

struct MachineConfig {
  uint64_t mem_bytes = 0;
  uint32_t cpus = 1;
  std::string cmdline;
  int kvm_fd = -1;
  int kernel_fd = -1;
  int initrd_fd = -1;  // -1: no initrd.
  // Guest RAM: a memfd of exactly mem_bytes sealed against shrinking and growing (the
  // broker's), or -1 to make one here.
  int mem_fd = -1;
  // The virtio devices, each served by a vhost-user backend over spec.fd, in PCI slot order.
  std::vector<VhostUserDeviceSpec> devices;
  // Set: no kernel is loaded; create() restores this machine (RAM is already in mem_fd).
  std::optional<MachineRestoreData> restore;
};

struct MachineExit {
  enum class Reason { kGuestStatus, kReset, kPowerOff, kStopped, kError };
  Reason reason = Reason::kError;
  int32_t status = 0;
  std::string message;
};

class Machine {
 public:
  using ConsoleFn = std::function<void(uint8_t)>;

  // Builds the VM and loads the kernel. `console` receives every byte the guest writes to the
  // UART (called from vCPU threads, under the UART's lock).
  static Result<std::unique_ptr<Machine>> create(const MachineConfig& config, ConsoleFn console);
  ~Machine();

  // Starts the vCPU threads. `done_fd` (an eventfd) is signalled when the VM has ended.
  Result<void> start(int done_fd);
  // Asks every vCPU to leave KVM_RUN; the first reason recorded wins.
  void request_stop(MachineExit exit);
  // Joins the vCPU threads and returns why the VM ended. Call after done_fd fired.
  MachineExit join();
  void console_input(const uint8_t* data, size_t len);

  // Parks every vCPU outside KVM_RUN (returns once all are parked), and lets them go again.
  // While paused the vCPUs' state can be saved and restored. resume() first starts the
  // devices' rings again if save_devices() stopped them (a device that cannot is failed:
  // its driver sees DEVICE_NEEDS_RESET).
  Result<void> pause();
  void resume();
  bool paused() const { return pause_flag_.load(); }
  Result<std::vector<VcpuState>> save_cpus();
  // Only the vCPUs (a rewind within this VM: its irqchip and clock run on).
  Result<void> restore_cpus(const std::vector<VcpuState>& states);
  Result<VmState> save_vm();
  // The platform device models' state blobs (Uart::state(), I8042::state()).
  std::vector<uint8_t> save_uart();
  std::vector<uint8_t> save_i8042();
  // The whole machine into this (paused) VM: vCPUs and VM in KVM's order
  // (restore_machine_state, kvm.h), then the device models, last.
  Result<void> restore_machine(const std::vector<VcpuState>& cpus, const VmState& vm, const UartState& uart,
                               const I8042State& i8042, bool realtime);
  // Whether save_devices() can save every device; else one sentence naming the first that
  // cannot. Changes nothing.
  Result<void> check_save();
  // Only while paused: stops each device's rings and takes its state, in device order. On
  // failure the rings stay stopped until resume().
  Result<std::vector<SavedDevice>> save_devices();
  uint64_t first_run_ns() const { return first_run_ns_; }
  uint64_t first_exit_ns() const { return first_exit_ns_.load(); }

 private:
  Machine() = default;
  Result<void> load_kernel(const MachineConfig& config);
  // create()'s last step with MachineConfig.restore: checks every device blob, then restores
  // the vCPUs and VM, then the devices (transports, KVM routes, backends), last.
  Result<void> restore_from(const MachineRestoreData& saved);
  void restart_devices();
  Result<void> add_vhost_user_device(const VhostUserDeviceSpec& spec);
  // Brings KVM's ioeventfds, irqfds and MSI routes in line with what a device's transport
  // wants now (after the guest touched its config space or BAR). Holds pci_mu_.
  void sync_device(size_t index);
  void vcpu_loop(size_t i);
  void park(size_t i);
  void handle_pio(kvm_run* run);
  void handle_mmio(kvm_run* run);
  Result<void> apply_msi_routes();
  uint32_t pio_in(uint16_t port, uint8_t size);
  void pio_out(uint16_t port, uint8_t size, uint32_t value);

  MachineConfig config_;
  ConsoleFn console_;
  void* ram_ = nullptr;
  uint64_t ram_size_ = 0;  // Bytes mapped at ram_ (low and high RAM, contiguously).
  UniqueFd memfd_;
  GuestMemory memory_;
  std::unique_ptr<KvmVm> vm_;
  std::vector<KvmVcpu> vcpus_;
  std::vector<std::thread> threads_;
  std::mutex uart_mu_;
  std::unique_ptr<Uart> uart_;
  std::mutex i8042_mu_;
  I8042 i8042_;

  // PCI: the bus, and virtio devices whose data path runs in other processes. The vCPU that
  // traps a config or BAR access works on them under pci_mu_.
  struct VirtioDevice {
    std::unique_ptr<VhostUserDevice> backend;
    std::unique_ptr<virtio_pci::Transport> transport;
    uint32_t gsi_base = 0;                    // Queue q raises GSI gsi_base + q.
    uint64_t synced = ~0ull;                  // transport->generation() last synced.
    std::optional<uint64_t> ioevent_bar;      // Where the kick ioeventfds are registered.
    std::vector<std::optional<virtio_pci::MsiMessage>> routes;  // By queue: irqfd and route live.
  };
  std::mutex pci_mu_;
  pci::Bus pci_bus_;
  std::vector<VirtioDevice> virtio_;
  bool ioeventfd_any_length_ = false;
  int done_fd_ = -1;
  std::mutex exit_mu_;
  bool stopping_ = false;
  std::atomic<bool> stop_flag_{false};
  MachineExit exit_;
  uint64_t first_run_ns_ = 0;
  std::atomic<uint64_t> first_exit_ns_{0};

  std::vector<uint32_t> msr_indices_;  // What save_cpus() saves (kvm_saveable_msrs).
  KvmStateCaps state_caps_;
  std::atomic<bool> pause_flag_{false};
  std::mutex park_mu_;
  std::condition_variable park_cv_;
  size_t parked_ = 0;
};

uint64_t monotonic_ns();

}  // namespace moss
