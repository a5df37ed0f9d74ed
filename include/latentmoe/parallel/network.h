// Which local address peers can reach this rank at: the host's interfaces, and the address the
// kernel routes toward MASTER_ADDR (what a connection to it would leave from). Gloo binds there
// unless GLOO_SOCKET_IFNAME says otherwise, instead of wherever the hostname resolves (stock
// Debian and many cloud images map it to 127.0.1.1). Torch-free; errors are ConfigError naming
// the variable, its value and the fix.
#pragma once

#include <string>
#include <vector>

namespace latentmoe::parallel {

struct NetworkInterface {
  std::string name;     // "eth0"
  std::string address;  // "10.0.0.2" (IPv4 or IPv6, numeric)
  bool loopback = false;
  bool up = false;
};

// Every address of every interface, in the kernel's order.
std::vector<NetworkInterface> network_interfaces();
// "lo 127.0.0.1, veth0 10.0.0.2" (for error messages).
std::string describe_interfaces(const std::vector<NetworkInterface>& interfaces);

// True for localhost, 127.0.0.0/8 and ::1.
bool is_loopback_host(const std::string& host);

struct Route {
  std::string interface;  // where a connection toward the host leaves ("" when no interface has the address)
  std::string address;    // this host's source address for it
  std::string peer;       // the host, resolved (numeric)
};
// The route toward host:port (a UDP socket connected to it; no packet is sent). `variable` names
// the setting in errors ("MASTER_ADDR"): a host that does not resolve, or no route to it.
Route route_toward(const std::string& host, int port, const std::string& variable);

// GLOO_SOCKET_IFNAME's names ("eth0" or "eth0,eth1"), each checked to exist on this host
// (ConfigError listing the host's interfaces otherwise).
std::vector<std::string> checked_interface_names(const std::string& value, const std::string& variable);

}  // namespace latentmoe::parallel
