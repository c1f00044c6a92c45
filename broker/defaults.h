// Defaults of the guest a `moss run` boots, shared with the benchmarks that compare moss with
// other VMMs on the same guest.
#pragma once

namespace moss {

// `quiet` keeps kernel chatter off the console (stdout without a command, the --console
// file or the failure report with one), reboot=k makes a reboot an i8042 pulse we see,
// panic=-1 reboots at once.
// ACPI (hardware-reduced) describes the CPUs, the UART, the i8042 and the PCI host bridge
// that virtio disks sit behind, and powers the VM off.
inline constexpr const char* kBaseCmdline = "console=ttyS0 reboot=k panic=-1 quiet";

}  // namespace moss
