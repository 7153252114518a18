//! Lambda adapter: [`ImageFunctions`] on `aws-sdk-lambda`. ListFunctions with
//! every version (an alias may point at an older published version, which
//! runs an older image), then GetFunction for the image ones: only it says
//! the image URI and the digest Lambda resolved.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_lambda::types::{FunctionVersion, PackageType};
use aws_sdk_lambda::Client;

use super::{classify, ApiCalls};
use crate::ports::{FunctionImage, ImageFunctions};
use crate::AwsError;

pub struct LambdaAdapter {
    client: Client,
}

impl LambdaAdapter {
    /// A client for `region` (the SDK configuration's own when `None`).
    pub fn new(sdk: &SdkConfig, calls: &ApiCalls, region: Option<&str>) -> Self {
        let mut config = aws_sdk_lambda::config::Builder::from(sdk).interceptor(calls.clone());
        if let Some(region) = region {
            config = config.region(aws_config::Region::new(region.to_string()));
        }
        Self::from_client(Client::from_conf(config.build()))
    }

    pub fn from_client(client: Client) -> Self {
        LambdaAdapter { client }
    }
}

#[async_trait]
impl ImageFunctions for LambdaAdapter {
    async fn image_functions(&self) -> Result<Vec<FunctionImage>, AwsError> {
        let functions: Vec<aws_sdk_lambda::types::FunctionConfiguration> = self
            .client
            .list_functions()
            .function_version(FunctionVersion::All)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListFunctions", e))?;
        let mut images = Vec::new();
        for f in functions.iter().filter(|f| f.package_type() == Some(&PackageType::Image)) {
            let Some(name) = f.function_name() else { continue };
            let version = f.version().unwrap_or("$LATEST");
            let result = self.client.get_function().function_name(name).qualifier(version).send().await;
            let output = match result {
                Ok(output) => output,
                Err(e) => {
                    let error = classify("GetFunction", e);
                    if error.code_is("ResourceNotFoundException") {
                        continue; // deleted since the listing
                    }
                    return Err(error);
                }
            };
            let code = output.code();
            images.push(FunctionImage {
                name: format!("{name}:{version}"),
                image_uri: code.and_then(|c| c.image_uri()).map(String::from),
                resolved_image_uri: code.and_then(|c| c.resolved_image_uri()).map(String::from),
            });
        }
        Ok(images)
    }
}
