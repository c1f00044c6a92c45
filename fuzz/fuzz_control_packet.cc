// libFuzzer target: decoding a control packet the vcpu process sends to the broker, and
// reading every field the broker reads, as Session::handle_packet does.
#include <cstddef>
#include <cstdint>
#include <span>

#include <kj/exception.h>

#include "ipc/channel.h"
#include "ipc/vcpu.capnp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto packet = moss::ipc::decode_packet(std::span<const uint8_t>(data, size));
  if (!packet.ok()) return 0;
  (void)kj::runCatchingExceptions([&] {
    auto msg = (*packet)->root<moss::ipc::VcpuToBroker>();
    (void)msg.getVersion();
    switch (msg.which()) {
      case moss::ipc::VcpuToBroker::CONSOLE: (void)msg.getConsole().size(); break;
      case moss::ipc::VcpuToBroker::STARTED: (void)msg.getStarted().getFirstRunNs(); break;
      case moss::ipc::VcpuToBroker::REFUSED: (void)msg.getRefused().size(); break;
      case moss::ipc::VcpuToBroker::PAUSED:
      case moss::ipc::VcpuToBroker::RESUMED:
      case moss::ipc::VcpuToBroker::CPU_STATE:
      case moss::ipc::VcpuToBroker::MACHINE_STATE:
      case moss::ipc::VcpuToBroker::RESTORED:
        break;
      case moss::ipc::VcpuToBroker::EXITED: {
        auto x = msg.getExited();
        (void)x.getReason();
        (void)x.getMessage().size();
        break;
      }
    }
  });
  return 0;
}
