// ConfinePath: every path a job names stays inside the data root after resolving symlinks, "."
// and ".." the way open() does, and a refusal says nothing about what lies outside.
#include "core/path_confinement.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace fp8d {
namespace {
namespace fs = std::filesystem;

class PathConfinementTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = testing::TempDir() + "/fp8d_confine_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = fs::canonical(tmpl).string();
    root_ = base_ + "/root";
    outside_ = base_ + "/outside";
    fs::create_directories(root_ + "/sub/deeper");
    fs::create_directories(outside_);
    std::ofstream(outside_ + "/secret") << "not for jobs\n";
    std::ofstream(root_ + "/sub/data.txt") << "text\n";
    // The case from the report: a link inside the root to a directory outside it.
    fs::create_directory_symlink(outside_, root_ + "/lic");
  }
  void TearDown() override { fs::remove_all(base_); }

  std::string base_, root_, outside_;
};

TEST_F(PathConfinementTest, ResolvesRelativeAbsoluteAndDotsInside) {
  auto rel = ConfinePath(root_, "sub/data.txt", "data.train");
  ASSERT_TRUE(rel.ok()) << rel.status();
  EXPECT_EQ(*rel, root_ + "/sub/data.txt");
  auto dotted = ConfinePath(root_, "./sub/deeper/../data.txt", "data.train");
  ASSERT_TRUE(dotted.ok()) << dotted.status();
  EXPECT_EQ(*dotted, root_ + "/sub/data.txt");
  auto absolute = ConfinePath(root_, root_ + "/sub/data.txt", "data.train");
  ASSERT_TRUE(absolute.ok()) << absolute.status();
  EXPECT_EQ(*absolute, root_ + "/sub/data.txt");
  auto unconfined = ConfinePath("", "/etc/passwd", "data.train");
  ASSERT_TRUE(unconfined.ok());
  EXPECT_EQ(*unconfined, "/etc/passwd");
  EXPECT_EQ(ConfinePath(root_, "", "data.train").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PathConfinementTest, RefusesSymlinkOutAndDotDotThroughAMissingComponent) {
  // `nope` does not exist: weakly_canonical resolved `nope/..` by text and never looked at the
  // `lic` link, so this path was accepted and the file outside was read.
  auto through_missing = ConfinePath(root_, "nope/../lic/secret", "data.train");
  EXPECT_FALSE(through_missing.ok());
  EXPECT_EQ(through_missing.status().code(), absl::StatusCode::kInvalidArgument)
      << through_missing.status();
  EXPECT_NE(through_missing.status().message().find("data.train"), std::string::npos);

  fs::create_directory(root_ + "/nope");  // now `nope/..` resolves, and `lic` leads out
  for (const std::string& p : {"nope/../lic/secret", "lic/secret", "lic", "sub/../lic/secret"}) {
    auto s = ConfinePath(root_, p, "data.val");
    EXPECT_EQ(s.status().code(), absl::StatusCode::kPermissionDenied) << p << ": " << s.status();
  }
}

TEST_F(PathConfinementTest, RefusalIsTheSameWhetherTheTargetExistsOrNot) {
  auto existing = ConfinePath(root_, "lic/secret", "data.train");
  auto missing = ConfinePath(root_, "lic/no-such-file", "data.train");
  ASSERT_EQ(existing.status().code(), absl::StatusCode::kPermissionDenied);
  ASSERT_EQ(missing.status().code(), absl::StatusCode::kPermissionDenied);
  // Neither answer names the target outside the root.
  for (const absl::Status& s : {existing.status(), missing.status()}) {
    EXPECT_EQ(s.message().find(outside_), std::string::npos) << s;
    EXPECT_NE(s.message().find("outside the root"), std::string::npos) << s;
  }
}

TEST_F(PathConfinementTest, RefusesAbsoluteAndDotDotPathsOutside) {
  EXPECT_EQ(ConfinePath(root_, outside_ + "/secret", "f").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ConfinePath(root_, "/etc/shadow", "f").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ConfinePath(root_, "..", "f").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ConfinePath(root_, "sub/../../outside/secret", "f").status().code(),
            absl::StatusCode::kPermissionDenied);
  // A sibling whose name starts with the root's name is still outside.
  EXPECT_EQ(ConfinePath(root_, root_ + "x/f", "f").status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(PathConfinementTest, FollowsLinksThatStayInside) {
  fs::create_directory_symlink(root_ + "/sub/deeper", root_ + "/deep");      // absolute target
  fs::create_symlink("sub/data.txt", root_ + "/data-link");                   // relative target
  auto via_abs = ConfinePath(root_, "deep/../data.txt", "f");  // `..` of the link's target
  ASSERT_TRUE(via_abs.ok()) << via_abs.status();
  EXPECT_EQ(*via_abs, root_ + "/sub/data.txt");
  auto via_rel = ConfinePath(root_, "data-link", "f");
  ASSERT_TRUE(via_rel.ok()) << via_rel.status();
  EXPECT_EQ(*via_rel, root_ + "/sub/data.txt");
  // A root given through a symlink is resolved first.
  fs::create_directory_symlink(root_, base_ + "/root-link");
  auto via_root_link = ConfinePath(base_ + "/root-link", "sub/data.txt", "f");
  ASSERT_TRUE(via_root_link.ok()) << via_root_link.status();
  EXPECT_EQ(*via_root_link, root_ + "/sub/data.txt");
}

TEST_F(PathConfinementTest, MissingComponentsAndLinkLoops) {
  auto fresh = ConfinePath(root_, "new/dir/./file.bin", "f");  // e.g. an output not written yet
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(*fresh, root_ + "/new/dir/file.bin");
  fs::create_symlink("loop-b", root_ + "/loop-a");
  fs::create_symlink("loop-a", root_ + "/loop-b");
  EXPECT_EQ(ConfinePath(root_, "loop-a/x", "f").status().code(),
            absl::StatusCode::kInvalidArgument);
  // A dangling link inside the root that points outside is refused like any other.
  fs::create_symlink("/nonexistent-dir/x", root_ + "/dangling");
  EXPECT_EQ(ConfinePath(root_, "dangling", "f").status().code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace fp8d
