#include "vcpu/cpu_state_codec.h"

#include <cstring>

namespace moss {
namespace {

constexpr size_t kMaxMsrs = 4096;

template <typename T>
kj::ArrayPtr<const capnp::byte> bytes_of(const T& v) {
  return kj::arrayPtr(reinterpret_cast<const capnp::byte*>(&v), sizeof v);
}

template <typename T>
Result<void> read_exact(capnp::Data::Reader in, T& out, const char* what) {
  if (in.size() != sizeof out) {
    return make_error(std::string("the saved ") + what + " is " + std::to_string(in.size()) + " bytes, not " +
                      std::to_string(sizeof out));
  }
  std::memcpy(&out, in.begin(), sizeof out);
  return {};
}

}  // namespace

void encode_cpu_state(const VcpuState& s, ipc::CpuState::Builder out) {
  out.setRegs(bytes_of(s.regs));
  out.setSregs(bytes_of(s.sregs));
  out.setXsave(bytes_of(s.xsave));
  out.setXcrs(bytes_of(s.xcrs));
  out.setLapic(bytes_of(s.lapic));
  out.setMsrs(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(s.msrs.data()), s.msrs.size() * sizeof(kvm_msr_entry)));
  out.setMpState(s.mp_state.mp_state);
  out.setEvents(bytes_of(s.events));
  out.setDebugregs(bytes_of(s.debugregs));
}

Result<VcpuState> decode_cpu_state(ipc::CpuState::Reader in) {
  VcpuState s;
  MOSS_CHECK(read_exact(in.getRegs(), s.regs, "general registers"));
  MOSS_CHECK(read_exact(in.getSregs(), s.sregs, "special registers"));
  MOSS_CHECK(read_exact(in.getXsave(), s.xsave, "XSAVE area"));
  MOSS_CHECK(read_exact(in.getXcrs(), s.xcrs, "XCRs"));
  MOSS_CHECK(read_exact(in.getLapic(), s.lapic, "local APIC"));
  MOSS_CHECK(read_exact(in.getEvents(), s.events, "vCPU events"));
  MOSS_CHECK(read_exact(in.getDebugregs(), s.debugregs, "debug registers"));
  auto msrs = in.getMsrs();
  if (msrs.size() % sizeof(kvm_msr_entry) != 0 || msrs.size() / sizeof(kvm_msr_entry) > kMaxMsrs) {
    return make_error("the saved MSR list is malformed");
  }
  s.msrs.resize(msrs.size() / sizeof(kvm_msr_entry));
  if (!s.msrs.empty()) std::memcpy(s.msrs.data(), msrs.begin(), msrs.size());
  if (s.xcrs.nr_xcrs > KVM_MAX_XCRS) return make_error("the saved XCR count is out of range");
  s.mp_state.mp_state = in.getMpState();
  if (s.mp_state.mp_state > KVM_MP_STATE_AP_RESET_HOLD) return make_error("the saved MP state is unknown");
  return s;
}

}  // namespace moss
