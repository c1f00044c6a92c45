// What each real-VM test needs of the host, declared with the test itself:
//
//   KVM_TEST(Suite, Name)    runs on any KVM, PVM included: freestanding test guests
//                            (tests/guests/) and the vcpu process on its own;
//   LINUX_TEST(Suite, Name)  boots Linux, so it needs a KVM that runs Linux: hardware
//                            virtualization, or the nested test host.
//
// tests/CMakeLists.txt reads these declarations from kvm_test.cc to route every test
// (tests/kvm/run-kvm-test.sh runs it here or takes its result from the nested-host batch), and
// refuses a plain TEST there. The spawn check below keeps the declarations true: a test
// declared KVM_TEST that starts `moss run` with a Linux kernel fails, wherever it runs.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moss::test {

enum class Needs { kKvm, kLinux };

// Records what test Suite.Name needs; returns true (for the static in the macros below).
bool declare_needs(const char* suite, const char* name, Needs needs);

// Whether `argv` starts a Linux guest: `moss run` without --kernel (the default Debian kernel)
// or with a kernel that is not one of the freestanding test guests in `guests_dir`.
bool boots_linux(const std::vector<std::string>& argv, const std::string& guests_dir);

// Installs the spawn check (subprocess.h) for the running test binary: every Process started
// during a test is checked against the test's declaration.
void check_declared_needs(const std::string& guests_dir);

}  // namespace moss::test

#define MOSS_NEEDS_TEST_(suite, name, needs)                                                     \
  [[maybe_unused]] static const bool moss_needs_##suite##_##name =                               \
      ::moss::test::declare_needs(#suite, #name, ::moss::test::Needs::needs);                    \
  TEST(suite, name)
#define KVM_TEST(suite, name) MOSS_NEEDS_TEST_(suite, name, kKvm)
#define LINUX_TEST(suite, name) MOSS_NEEDS_TEST_(suite, name, kLinux)
