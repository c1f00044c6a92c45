#include "devices/vsock/hybrid.h"

#include <charconv>

namespace moss::vsock {

Result<uint32_t> parse_connect_line(std::string_view line) {
  constexpr std::string_view kVerb = "CONNECT ";
  if (line.size() > kMaxConnectLine) return make_error("the request line is longer than " + std::to_string(kMaxConnectLine) + " bytes");
  if (line.empty() || line.back() != '\n') return make_error("the request line does not end in a newline");
  line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!line.starts_with(kVerb)) return make_error("the request is not \"CONNECT <port>\"");
  std::string_view digits = line.substr(kVerb.size());
  if (digits.empty() || digits.size() > 10) return make_error("\"CONNECT\" needs a port number of 1 to 10 digits");
  for (char ch : digits) {
    if (ch < '0' || ch > '9') return make_error("the port after \"CONNECT\" must be decimal digits only");
  }
  uint64_t v = 0;
  std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (v > UINT32_MAX) return make_error("the port after \"CONNECT\" must be below 2^32");
  return static_cast<uint32_t>(v);
}

std::string ok_line(uint32_t host_port) { return "OK " + std::to_string(host_port) + "\n"; }

std::string guest_port_path(const std::string& uds_path, uint32_t port) { return uds_path + "_" + std::to_string(port); }

}  // namespace moss::vsock
