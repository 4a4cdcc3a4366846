// The dashboard's static files (server/dashboard/), compiled into the daemon at build time so a
// copied fp8d binary (the GPU bundle's) serves them without any file next to it.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace fp8d {

struct DashboardAsset {
  std::string path;          // URL path, e.g. "/dashboard.js"; index.html is served at "/"
  std::string content_type;
  const unsigned char* data;
  size_t size;
};

// Defined in the generated dashboard_assets.cc (server/dashboard/embed_assets.cmake).
const std::vector<DashboardAsset>& DashboardAssets();

}  // namespace fp8d
