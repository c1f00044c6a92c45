/* kvm-anchor: holds one idle KVM VM (an in-kernel irqchip and one vCPU, never run) open in
 * the nested test host for as long as it runs.
 *
 * Why: every VM the tests create and destroy otherwise flips static keys in the host kernel
 * (the preempt notifier key per VM; apic_sw_disabled per vCPU, its decrement deferred to a
 * worker) and with them enables and disables SVM on every CPU. Each flip patches kernel
 * text with int3 breakpoints and cross-CPU syncs, which QEMU's multi-threaded TCG has been
 * seen to turn into a frozen or panicked test host ("corrupted stack end detected inside
 * scheduler", CPUs looping in exc_int3). With this VM held, every count stays above zero,
 * so the tests' VMs patch nothing.
 *
 * Static, with no library beyond libc, for the test host's initramfs. Exits 0 once the VM
 * is set up, leaving a child that holds it until it is killed; 1 (with a message) if not. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *what) {
  fprintf(stderr, "kvm-anchor: %s: %s\n", what, strerror(errno));
  return 1;
}

int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return fail("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return fail("KVM_CREATE_VM");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) return fail("KVM_CREATE_IRQCHIP");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return fail("KVM_CREATE_VCPU");
  pid_t pid = fork();
  if (pid < 0) return fail("fork");
  if (pid > 0) return 0;
  setsid();
  for (;;) pause();
}
