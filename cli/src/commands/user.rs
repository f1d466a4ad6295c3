//! `nasfleet user create|token|list|show|edit|remove`: the fleet's people, their roles and the systems they see; a new user gets a single-use sign-in token and logs in with `nasfleet login` on their own machine.

use super::{confirm, status_error};
use crate::context::Context;
use crate::output::{OutputFormat, Table, human_time, print_json, time_or_dash};
use anyhow::bail;
use clap::Subcommand;
use nasfleet_common::duration::parse_duration;
use nasfleet_common::enroll_lines::login_command;
use nasfleet_common::names::{validate_system_name, validate_user_name};
use nasfleet_common::roles::{Role, ScopeError, check_scope};
use nasfleet_common::status::rfc3339_from_unix_ms;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{
    CreateUserRequest, CreateUserResponse, CreateUserTokenRequest, ListUsersRequest,
    SetUserPasswordRequest, UpdateUserRequest, User, UserRef,
};
use serde::Serialize;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user and mint the single-use sign-in token they log in with.
    Create {
        name: String,
        /// admin (everything), operator (run and change tasks of its
        /// systems) or viewer (read its systems).
        #[arg(long)]
        role: String,
        /// A system an operator or viewer sees (repeat for more).
        #[arg(long = "system", value_name = "NAME")]
        systems: Vec<String>,
        /// An operator or viewer sees every system, also ones enrolled later.
        #[arg(long)]
        all_systems: bool,
        /// How long the sign-in token stays valid (e.g. 1h, 2d; at most 7d).
        #[arg(long, default_value = "1d")]
        ttl: String,
    },
    /// Mint a new sign-in token for an existing user (a new machine, a lost
    /// key, a certificate near its end); logging in with it revokes their
    /// current certificate.
    Token {
        name: String,
        #[arg(long, default_value = "1d")]
        ttl: String,
    },
    /// Every user with role, systems and certificate expiry.
    List,
    /// One user.
    Show { name: String },
    /// Change a user's role and systems (what is not given stays).
    Edit {
        name: String,
        #[arg(long)]
        role: Option<String>,
        /// The systems the user sees from now on (repeat; replaces the list).
        #[arg(long = "system", value_name = "NAME")]
        systems: Vec<String>,
        /// The user sees every system.
        #[arg(long)]
        all_systems: bool,
    },
    /// Set (or with --clear remove) the user's web console password. The
    /// password is read from --password-file or, without it, from the first
    /// line of standard input; it is never a flag, so it stays out of
    /// shell history and process lists.
    SetPassword {
        name: String,
        #[arg(long, value_name = "FILE", conflicts_with = "clear")]
        password_file: Option<std::path::PathBuf>,
        /// Turn password sign-in off for the user.
        #[arg(long)]
        clear: bool,
    },
    /// Remove a user; their certificate is revoked at once.
    Remove {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

impl UserCommand {
    /// The shared rules, before any connection; the controller checks again.
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            UserCommand::Create {
                name,
                role,
                systems,
                all_systems,
                ttl,
            } => {
                validate_user_name(name)?;
                let role: Role = role.parse()?;
                check_systems(systems)?;
                check_scope(role, systems, *all_systems)?;
                parse_duration("--ttl", ttl)?;
            }
            UserCommand::Token { name, ttl } => {
                validate_user_name(name)?;
                parse_duration("--ttl", ttl)?;
            }
            UserCommand::Edit {
                name,
                role,
                systems,
                all_systems,
            } => {
                validate_user_name(name)?;
                if let Some(role) = role {
                    role.parse::<Role>()?;
                }
                check_systems(systems)?;
                if *all_systems && !systems.is_empty() {
                    return Err(ScopeError::Both.into());
                }
            }
            UserCommand::Show { name }
            | UserCommand::Remove { name, .. }
            | UserCommand::SetPassword { name, .. } => {
                validate_user_name(name)?;
            }
            UserCommand::List => {}
        }
        Ok(())
    }

    /// Runs one `user` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        let mut client = FleetClient::new(channel);
        let output = ctx.output;
        match self {
            UserCommand::Create {
                name,
                role,
                systems,
                all_systems,
                ttl,
            } => {
                let answer = client
                    .create_user(CreateUserRequest {
                        name,
                        role,
                        systems,
                        all_systems,
                        ttl_secs: parse_duration("--ttl", &ttl)?.as_secs(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print_token(answer, output)
            }
            UserCommand::Token { name, ttl } => {
                let answer = client
                    .create_user_token(CreateUserTokenRequest {
                        name,
                        ttl_secs: parse_duration("--ttl", &ttl)?.as_secs(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print_token(answer, output)
            }
            UserCommand::List => {
                let users = client
                    .list_users(ListUsersRequest {})
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .users;
                print_users(&users, output)
            }
            UserCommand::Show { name } => {
                let user = client
                    .get_user(UserRef { name })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print_user(&user, output)
            }
            UserCommand::Edit {
                name,
                role,
                systems,
                all_systems,
            } => edit(&mut client, name, role, systems, all_systems, output).await,
            UserCommand::SetPassword {
                name,
                password_file,
                clear,
            } => {
                let password = if clear {
                    String::new()
                } else {
                    read_password(password_file.as_deref()).await?
                };
                let user = client
                    .set_user_password(SetUserPasswordRequest { name, password })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match output {
                    OutputFormat::Json => print_json(&UserJson::from(&user)),
                    OutputFormat::Table if user.password_set => {
                        outln!(
                            "User '{}' can now sign in to the console with a password.",
                            user.name
                        )
                    }
                    OutputFormat::Table => {
                        outln!("Password sign-in is off for user '{}'.", user.name)
                    }
                }
            }
            UserCommand::Remove { name, yes } => {
                if !yes
                    && !confirm(format!(
                        "Remove user '{name}'? Their certificate is revoked at once."
                    ))
                    .await?
                {
                    bail!("not removed (confirm with --yes when there is no terminal)");
                }
                let user = client
                    .remove_user(UserRef { name })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match output {
                    OutputFormat::Json => print_json(&UserJson::from(&user)),
                    OutputFormat::Table => {
                        outln!(
                            "Removed user '{}'; their certificate is revoked.",
                            user.name
                        )
                    }
                }
            }
        }
    }
}

fn check_systems(systems: &[String]) -> anyhow::Result<()> {
    for system in systems {
        validate_system_name(system)?;
    }
    Ok(())
}

/// `user edit`: what is not given stays as it is.
async fn edit(
    client: &mut FleetClient<Channel>,
    name: String,
    role: Option<String>,
    systems: Vec<String>,
    all_systems: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let current = client
        .get_user(UserRef { name: name.clone() })
        .await
        .map_err(status_error)?
        .into_inner();
    let role = role.unwrap_or(current.role.clone());
    let admin = role == Role::Admin.as_str();
    let (systems, all_systems) = if admin {
        // An admin sees everything; a scope given with --role admin is refused by the rule.
        (systems, all_systems)
    } else if all_systems || !systems.is_empty() {
        (systems, all_systems)
    } else {
        (current.systems.clone(), current.all_systems)
    };
    let user = client
        .update_user(UpdateUserRequest {
            name,
            role,
            systems,
            all_systems,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_user(&user, output)
}

#[derive(Serialize)]
struct UserJson {
    name: String,
    role: String,
    systems: Vec<String>,
    all_systems: bool,
    created: Option<String>,
    created_by: String,
    logged_in: bool,
    certificate_expires: Option<String>,
    password_set: bool,
}

impl From<&User> for UserJson {
    fn from(user: &User) -> Self {
        UserJson {
            name: user.name.clone(),
            role: user.role.clone(),
            systems: user.systems.clone(),
            all_systems: user.all_systems,
            created: rfc3339_from_unix_ms(user.created_unix_ms),
            created_by: user.created_by.clone(),
            password_set: user.password_set,
            logged_in: user.logged_in,
            certificate_expires: (user.cert_expires_unix_ms > 0)
                .then(|| rfc3339_from_unix_ms(user.cert_expires_unix_ms))
                .flatten(),
        }
    }
}

/// "all", "nas1, nas2", or "all (admin)".
fn systems_of(user: &User) -> String {
    if user.role == Role::Admin.as_str() {
        "all (admin)".to_owned()
    } else if user.all_systems {
        "all".to_owned()
    } else {
        user.systems.join(", ")
    }
}

fn print_users(users: &[User], output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&users.iter().map(UserJson::from).collect::<Vec<_>>()),
        OutputFormat::Table => {
            let mut table = Table::new(&[
                "NAME",
                "ROLE",
                "SYSTEMS",
                "LOGGED IN",
                "CERT EXPIRES",
                "CONSOLE PASSWORD",
            ]);
            for user in users {
                table.row(vec![
                    user.name.clone(),
                    user.role.clone(),
                    systems_of(user),
                    if user.logged_in { "yes" } else { "not yet" }.to_owned(),
                    time_or_dash(user.cert_expires_unix_ms),
                    if user.password_set { "set" } else { "-" }.to_owned(),
                ]);
            }
            outln!("{}", table.render())
        }
    }
}

fn print_user(user: &User, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&UserJson::from(user)),
        OutputFormat::Table => {
            outln!("Name:          {}", user.name)?;
            outln!("Role:          {}", user.role)?;
            outln!("Systems:       {}", systems_of(user))?;
            outln!(
                "Created:       {} by {}",
                human_time(user.created_unix_ms),
                user.created_by
            )?;
            if user.logged_in {
                outln!(
                    "Certificate:   expires {}",
                    time_or_dash(user.cert_expires_unix_ms)
                )?;
            } else {
                outln!("Certificate:   none yet (has not logged in)")?;
            }
            outln!(
                "Console:       {}",
                if user.password_set {
                    "password sign-in on (or `nasfleet ui`)"
                } else {
                    "sign in with `nasfleet ui` (no password set)"
                }
            )
        }
    }
}

#[derive(Serialize)]
struct TokenJson {
    user: UserJson,
    token: String,
    expires: Option<String>,
    ca_fingerprint: String,
    controller: String,
    login_command: String,
}

fn print_token(answer: CreateUserResponse, output: OutputFormat) -> anyhow::Result<()> {
    let command = login_command(
        &answer.controller_url,
        &answer.token,
        &answer.ca_fingerprint,
    );
    let user = answer.user.unwrap_or_default();
    match output {
        OutputFormat::Json => print_json(&TokenJson {
            user: UserJson::from(&user),
            token: answer.token,
            expires: rfc3339_from_unix_ms(answer.expires_unix_ms),
            ca_fingerprint: answer.ca_fingerprint,
            controller: answer.controller_url,
            login_command: command,
        }),
        OutputFormat::Table => {
            outln!(
                "User:            {} ({}, systems: {})",
                user.name,
                user.role,
                systems_of(&user)
            )?;
            outln!("Sign-in token:   {}", answer.token)?;
            outln!(
                "Expires:         {} (single use)",
                human_time(answer.expires_unix_ms)
            )?;
            outln!("CA fingerprint:  {}", answer.ca_fingerprint)?;
            outln!(
                "Hand the token to {} over a trusted channel; on their own machine they run:",
                user.name
            )?;
            outln!("  {command}")?;
            Ok(())
        }
    }
}

/// The new password: the first line of the file, or of standard input.
async fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let password = super::read_secret_line(file, "--password-file").await?;
    if password.is_empty() {
        bail!(
            "password: empty; give it on the first line of --password-file or standard input (use --clear to turn password sign-in off)"
        );
    }
    Ok(password)
}
