// Small helpers shared by the C++ tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

#include <fstream>
#include <string>

namespace latentmoe::testing {

// A fresh directory under the system temp dir, removed at scope exit; each one of a test its own.
class TempDir {
 public:
  TempDir() {
    static int created = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() / ("latentmoe_" + std::string(info ? info->name() : "test") + "_" +
                                                      std::to_string(::getpid()) + "_" + std::to_string(created++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  std::string write(const std::string& name, const std::string& text) const {
    const auto file = path_ / name;
    std::ofstream(file) << text;
    return file.string();
  }

 private:
  std::filesystem::path path_;
};

// Expects `fn` to throw E whose message contains every fragment.
template <class E, class Fn>
void expect_error_contains(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in: " << msg;
  }
}

}  // namespace latentmoe::testing
