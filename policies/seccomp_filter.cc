#include "policies/seccomp_filter.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <utility>
#include <vector>

#include "base/fd.h"

namespace moss::policy {
namespace {

scmp_compare to_scmp(Compare::Op op) {
  switch (op) {
    case Compare::Op::kEq: return SCMP_CMP_EQ;
    case Compare::Op::kNe: return SCMP_CMP_NE;
    case Compare::Op::kLt: return SCMP_CMP_LT;
    case Compare::Op::kLe: return SCMP_CMP_LE;
    case Compare::Op::kGt: return SCMP_CMP_GT;
    case Compare::Op::kGe: return SCMP_CMP_GE;
    case Compare::Op::kMaskedEq: return SCMP_CMP_MASKED_EQ;
  }
  return SCMP_CMP_EQ;
}

Error libseccomp_error(const std::string& what, int rc) {
  return errno_error_code(-rc, what);
}

}  // namespace

Result<Filter> Filter::compile(const Policy& policy, bool trap) {
  scmp_filter_ctx ctx = seccomp_init(trap ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
  if (ctx == nullptr) return make_error("cannot create a seccomp filter (libseccomp ran out of memory)");
  Filter f(ctx);
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, trap ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
  if (rc < 0) return libseccomp_error("cannot set the filter's bad-architecture action", rc);
  // A binary tree over system call numbers: the vCPU threads' KVM_RUN ioctl is on every VM
  // exit's path, and a linear filter would test it against every rule before it.
  (void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  // One rule per syscall with no arguments supersedes its conditional rules: keep only it.
  std::vector<std::string> unconditional;
  for (const auto& r : policy.rules) {
    if (r.any.empty() && r.errno_value == 0) unconditional.push_back(r.syscall);
  }
  auto is_unconditional = [&](const std::string& s) {
    for (const auto& u : unconditional) {
      if (u == s) return true;
    }
    return false;
  };
  std::vector<std::string> added;
  for (const auto& r : policy.rules) {
    int nr = seccomp_syscall_resolve_name(r.syscall.c_str());
    if (nr == __NR_SCMP_ERROR) {
      return make_error(r.where + ": '" + r.syscall + "' is not a system call libseccomp knows on x86_64");
    }
    uint32_t action = r.errno_value ? SCMP_ACT_ERRNO(static_cast<uint32_t>(r.errno_value)) : SCMP_ACT_ALLOW;
    if (r.any.empty() || (r.errno_value == 0 && is_unconditional(r.syscall))) {
      bool seen = false;
      for (const auto& a : added) seen = seen || a == r.syscall;
      if (seen) continue;
      added.push_back(r.syscall);
      rc = seccomp_rule_add_exact(ctx, action, nr, 0);
      if (rc < 0) return libseccomp_error(r.where + ": cannot add the rule for " + r.syscall, rc);
      continue;
    }
    for (const auto& alt : r.any) {
      std::vector<scmp_arg_cmp> cmps;
      for (const auto& c : alt.all) {
        scmp_arg_cmp s{};
        s.arg = c.arg;
        s.op = to_scmp(c.op);
        if (c.op == Compare::Op::kMaskedEq) {
          s.datum_a = c.mask;
          s.datum_b = c.value;
        } else {
          s.datum_a = c.value;
        }
        cmps.push_back(s);
      }
      rc = seccomp_rule_add_exact_array(ctx, action, nr, static_cast<unsigned>(cmps.size()), cmps.data());
      if (rc < 0) return libseccomp_error(r.where + ": cannot add the rule for " + r.syscall, rc);
    }
  }
  return f;
}

Filter::Filter(Filter&& o) noexcept : ctx_(std::exchange(o.ctx_, nullptr)) {}

Filter& Filter::operator=(Filter&& o) noexcept {
  if (this != &o) {
    if (ctx_) seccomp_release(ctx_);
    ctx_ = std::exchange(o.ctx_, nullptr);
  }
  return *this;
}

Filter::~Filter() {
  if (ctx_) seccomp_release(ctx_);
}

Result<void> Filter::load() const {
  // TSYNC: a thread a library started before us must not stay unfiltered. NNP is libseccomp's
  // default (on).
  int rc = seccomp_attr_set(ctx_, SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc < 0) return libseccomp_error("cannot ask for the filter on every thread", rc);
  rc = seccomp_load(ctx_);
  if (rc < 0) return libseccomp_error("cannot load the seccomp filter", rc);
  return {};
}

Result<std::string> Filter::pfc() const {
  int fd = memfd_create("moss-policy-pfc", MFD_CLOEXEC);
  if (fd < 0) return sys_error("create", "a memfd for the filter text");
  UniqueFd owned(fd);
  int rc = seccomp_export_pfc(ctx_, fd);
  if (rc < 0) return libseccomp_error("cannot export the filter", rc);
  std::string out;
  char buf[4096];
  ssize_t n;
  lseek(fd, 0, SEEK_SET);
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

Result<void> forbid_ioctls(std::span<const uint64_t> commands) {
  // The kernel takes an ioctl's command as 32 bits (unsigned int): compare the low half of
  // args[1]. Another architecture's call is the role's filter's to kill; here it passes.
  constexpr uint32_t kArch = offsetof(seccomp_data, arch), kNr = offsetof(seccomp_data, nr),
                     kCmd = offsetof(seccomp_data, args) + sizeof(uint64_t);  // args[1], low half (little-endian).
  if (commands.empty() || commands.size() > 200) return make_error("forbid_ioctls takes 1 to 200 commands");
  std::vector<sock_filter> prog;
  auto stmt = [&](uint16_t code, uint32_t k) { prog.push_back(BPF_STMT(code, k)); };
  auto jump = [&](uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { prog.push_back(BPF_JUMP(code, k, jt, jf)); };
  const uint8_t n = static_cast<uint8_t>(commands.size());
  stmt(BPF_LD | BPF_W | BPF_ABS, kArch);
  jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, static_cast<uint8_t>(n + 3));  // -> allow
  stmt(BPF_LD | BPF_W | BPF_ABS, kNr);
  jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, static_cast<uint8_t>(n + 1));  // -> allow
  stmt(BPF_LD | BPF_W | BPF_ABS, kCmd);
  for (uint8_t i = 0; i < n; i++) {
    // Match: jump over the remaining compares and the allow, to the kill.
    jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(commands[i]), static_cast<uint8_t>(n - i), 0);
  }
  stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  stmt(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog) != 0) {
    int e = errno;
    return sys_error_code(e, "load", "the filter that ends the set-up ioctls");
  }
  return {};
}

}  // namespace moss::policy
