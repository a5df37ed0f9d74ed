// getifaddrs(3) for the interfaces; a connected UDP socket and getsockname(2) for the route.
#include "latentmoe/parallel/network.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "latentmoe/util/error.h"
#include "latentmoe/util/host.h"

namespace latentmoe::parallel {

namespace {
std::string numeric_address(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {0};
  const void* raw = address->sa_family == AF_INET
                        ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(address)->sin_addr)
                        : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr);
  return inet_ntop(address->sa_family, raw, text, sizeof text) ? std::string(text) : std::string();
}
}  // namespace

std::vector<NetworkInterface> network_interfaces() {
  std::vector<NetworkInterface> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) continue;
    out.push_back({.name = i->ifa_name, .address = numeric_address(i->ifa_addr),
                   .loopback = (i->ifa_flags & IFF_LOOPBACK) != 0, .up = (i->ifa_flags & IFF_UP) != 0});
  }
  freeifaddrs(list);
  return out;
}

std::string describe_interfaces(const std::vector<NetworkInterface>& interfaces) {
  std::string out;
  for (const auto& i : interfaces) {
    out += fmt::format("{}{} {}{}", out.empty() ? "" : ", ", i.name, i.address, i.up ? "" : " (down)");
  }
  return out.empty() ? "none found" : out;
}

bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

Route route_toward(const std::string& host, int port, const std::string& variable) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    throw ConfigError(fmt::format("{}={} does not resolve on host {} ({}): give the rank-0 host's address or a name this "
                                  "host resolves", variable, host, host_name(), gai_strerror(rc)));
  }
  Route route;
  std::string error = "no address";
  for (const addrinfo* a = found; a != nullptr && route.address.empty(); a = a->ai_next) {
    const int fd = ::socket(a->ai_family, SOCK_DGRAM, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {  // UDP: picks the route, sends nothing
      sockaddr_storage local{};
      socklen_t length = sizeof local;
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
        route.address = numeric_address(reinterpret_cast<const sockaddr*>(&local));
        route.peer = numeric_address(a->ai_addr);
      }
    } else {
      error = std::strerror(errno);
    }
    ::close(fd);
  }
  freeaddrinfo(found);
  if (route.address.empty()) {
    throw ConfigError(fmt::format("{}={}: host {} has no route to it ({}); its interfaces: {}", variable, host, host_name(),
                                  error, describe_interfaces(network_interfaces())));
  }
  for (const auto& i : network_interfaces()) {
    if (i.address == route.address) route.interface = i.name;
  }
  return route;
}

std::vector<std::string> checked_interface_names(const std::string& value, const std::string& variable) {
  const std::vector<NetworkInterface> interfaces = network_interfaces();
  std::vector<std::string> names;
  size_t start = 0;
  while (start <= value.size()) {
    const size_t comma = std::min(value.find(',', start), value.size());
    if (comma > start) names.push_back(value.substr(start, comma - start));
    start = comma + 1;
  }
  if (names.empty()) throw ConfigError(fmt::format("{}='{}' names no interface (e.g. eth0 or eth0,eth1)", variable, value));
  for (const auto& name : names) {
    const bool exists = std::any_of(interfaces.begin(), interfaces.end(), [&](const auto& i) { return i.name == name; });
    if (!exists) {
      throw ConfigError(fmt::format("{}={}: host {} has no interface '{}'; its interfaces: {} (or unset {} to bind to the "
                                    "route toward MASTER_ADDR)", variable, value, host_name(), name,
                                    describe_interfaces(interfaces), variable));
    }
  }
  return names;
}

}  // namespace latentmoe::parallel
